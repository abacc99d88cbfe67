"""The contract between host and edge: file formats, their checks and the shared arithmetic.

Modules here use the standard library only, in the subset MicroPython also runs.
"""

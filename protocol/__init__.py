"""The contract between host and edge: file formats, their checks, the signed manifest, the
session and its transports, and the shared arithmetic.

The core (formats, manifest parsing, framing, the session state machine, the hash) uses the
standard library only, in the subset MicroPython also runs (edge/portable/manifest.txt lists
what runs there). `signing` needs cryptography, and each transport its own package (pyserial,
paramiko), imported only by the module that uses it.
"""

"""The portable set: what runs under MicroPython as well as CPython. manifest.txt beside this
file lists every file of the project that MicroPython loads; tools read it from there."""

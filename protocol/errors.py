"""Errors a user or the network can cause. CLIs print them on one line and exit with status 2."""


class BinsortError(Exception):
    """Something outside the program is wrong: a file, a folder, an option, a peer."""


class FormatError(BinsortError):
    """A model file or stream is not what it claims to be (bad magic, CRC, hash, layout)."""

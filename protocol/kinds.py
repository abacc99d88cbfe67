"""What kind of model a file or a stream holds, told by its first four bytes (docs/format.md)."""

from protocol import bnn, pranc

KINDS = {bnn.MAGIC: "bnn", pranc.MAGIC: "pranc"}


def model_kind(head: bytes) -> "str | None":
    """ "bnn" or "pranc" for data starting with that format's magic, else None."""
    return KINDS.get(bytes(head[:4]))


def file_kind(path: str) -> "str | None":
    """model_kind of a file's first bytes; None also when it cannot be read (its reader then
    reports the error with the path)."""
    try:
        with open(path, "rb") as f:
            return model_kind(f.read(4))
    except OSError:
        return None

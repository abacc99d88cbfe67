"""What kind of model a file or a stream holds, told by its first four bytes (docs/format.md)."""

from protocol import bnn, cascade, delta, pranc

KINDS = {
    bnn.MAGIC: "bnn",
    pranc.MAGIC: "pranc",
    cascade.MAGIC: "cascade",
    delta.MAGIC: "delta",
}


def model_kind(head: bytes) -> "str | None":
    """The kind ("bnn", "pranc", "cascade" or "delta") of data starting with that format's
    magic, else None."""
    return KINDS.get(bytes(head[:4]))


def file_kind(path: str) -> "str | None":
    """model_kind of a file's first bytes; None also when it cannot be read (its reader then
    reports the error with the path)."""
    try:
        with open(path, "rb") as f:
            return model_kind(f.read(4))
    except OSError:
        return None

"""What a file that is not the model it was taken for most likely is, from its first bytes: the
hint a "wrong magic" error gives (a training checkpoint handed to the edge, an image handed to
the packer)."""

_PACK_FIRST = "pack a training run into a model first: binsort pack RUN --out model.bnn"
_KNOWN = (
    (b"PK\x03\x04", "a PyTorch checkpoint (a zip file); " + _PACK_FIRST),
    (b"\x80\x02", "a pickled PyTorch checkpoint; " + _PACK_FIRST),
    (b"BSNN", "a .bnn model"),
    (b"BSPR", "a .pranc stream"),
    (b"BSCA", "a .bsc cascade"),
    (b"BSDL", "a .bsd delta"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"{", "JSON text"),
)


def what_it_is(head: bytes) -> "str | None":
    """A short description of data that starts with `head`, or None when nothing is known."""
    head = bytes(head)
    for magic, what in _KNOWN:
        if head.startswith(magic):
            return what
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:64]):
        return "a text file"
    return None


def wrong_magic(got: bytes) -> str:
    """The message for data that does not start with the expected magic: what it is instead
    when that can be told from `got` (its first bytes)."""
    what = what_it_is(got)
    if what is None:
        return "wrong magic %r" % bytes(got[:4])
    return "it is " + what

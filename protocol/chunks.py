"""Checking a payload against its manifest's chunk hashes (docs/format.md, "Manifest"): the one
hash walk that the store, the receiver and the portable receiver share. In the subset that
MicroPython runs (its hashlib has no hexdigest).

`ChunkVerifier` takes the payload's bytes as they arrive, in order, and says when a chunk is
complete; a chunk whose SHA-256 differs raises FormatError before the caller keeps any of it.
`good_prefix` walks a file that is already written and says how much of it is verified.
"""

import binascii
import hashlib

from protocol.errors import FormatError


def _hex(hasher) -> str:
    return binascii.hexlify(hasher.digest()).decode()


def chunk_start(chunks: list, offset: int) -> int:
    """Where the chunk that byte `offset` falls in starts (the last chunk's start at its end)."""
    start = 0
    for chunk in chunks[:-1]:
        if chunk[0] > offset:
            break
        start = chunk[0]
    return start


class ChunkVerifier:
    """Verifies in-order bytes against `chunks`, the manifest's [(end, sha256 hex, ...), ...].

    `offset` bytes are already verified or held (a resumed transfer); `pending` are the bytes
    between the start of the chunk that `offset` falls in and `offset`, which count towards that
    chunk's hash."""

    def __init__(self, chunks: list, offset: int = 0, pending: bytes = b""):
        self.chunks = chunks
        self.index = 0
        while self.index < len(chunks) - 1 and chunks[self.index][0] <= offset:
            self.index += 1
        self.offset = offset
        self.hasher = hashlib.sha256()
        if len(pending) != offset - self.start:
            raise ValueError("pending bytes must reach from the chunk start to the offset")
        self.hasher.update(pending)

    @property
    def start(self) -> int:
        """Where the chunk being received starts: everything before it is verified."""
        return self.chunks[self.index - 1][0] if self.index else 0

    @property
    def end(self) -> int:
        return self.chunks[self.index][0]

    def feed(self, data) -> "tuple[int, int | None]":
        """Take bytes from the front of `data`, up to the end of the current chunk: (how many
        were taken, the index of the chunk they completed or None). FormatError when that
        chunk fails its hash; then none of `data` counts, and the caller drops what it holds
        of the chunk (from `start` on)."""
        end = self.end
        take = min(len(data), end - self.offset)
        if take <= 0:
            raise FormatError("more bytes than the manifest's %d" % end)
        self.hasher.update(bytes(data[:take]))
        if self.offset + take < end:
            self.offset += take
            return take, None
        if _hex(self.hasher) != self.chunks[self.index][1]:
            self.hasher = hashlib.sha256()  # the chunk is received again from its start
            self.offset = self.start
            raise FormatError("tampered payload: the chunk ending at byte %d fails its hash" % end)
        self.offset = end
        self.hasher = hashlib.sha256()
        done = self.index
        self.index = min(self.index + 1, len(self.chunks) - 1)
        return take, done


def good_prefix(chunks: list, f, limit: int) -> "tuple[int, int | None]":
    """Walk the whole chunks of a file object read from its start, up to byte `limit`:
    (the end of the last chunk that matches its hash, the end of the first one that does not or
    None). Chunks ending past `limit` are not read."""
    start = 0
    for chunk in chunks:
        end = chunk[0]
        if end > limit:
            break
        if _hex(hashlib.sha256(f.read(end - start))) != chunk[1]:
            return start, end
        start = end
    return start, None

"""The record framing that `.bsc` cascades and `.bsd` deltas share with `.bnn` sections: an
8-byte header (magic, u16 major, u16 minor), then records of tag (4 bytes), u32 length, payload
and u32 CRC-32 of tag + length + payload. Standard library only, in the subset MicroPython runs.
"""

import binascii
import struct

HEADER = "<4sHH"  # magic, major, minor
RECORD = "<4sI"  # tag, payload length; payload; u32 CRC32 of tag + length + payload


def record(tag: bytes, payload: bytes) -> bytes:
    head = struct.pack(RECORD, tag, len(payload))
    return head + payload + struct.pack("<I", binascii.crc32(head + payload) & 0xFFFFFFFF)


def ends_on_record(f, length: int, magic: bytes, last: bytes) -> bool:
    """Whether the first `length` bytes of the open file `f`, a stream of `magic`, end just
    after a record tagged `last`. Told from the record headers alone (a seek and 8 bytes a
    record; nothing else is checked): for a receiver to tell cheaply whether a verified prefix
    of a `.bsc` cascade or a `.bsd` delta is one to install."""
    hn, rn = struct.calcsize(HEADER), struct.calcsize(RECORD)
    f.seek(0)
    if length < hn or f.read(4) != magic:
        return False
    at, tag = hn, None
    while at + rn <= length:
        f.seek(at)
        tag, size = struct.unpack(RECORD, f.read(rn))
        at += rn + size + 4
    return at == length and tag == last

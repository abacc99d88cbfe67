"""The record framing that `.bsc` cascades and `.bsd` deltas share with `.bnn` sections: an
8-byte header (magic, u16 major, u16 minor), then records of tag (4 bytes), u32 length, payload
and u32 CRC-32 of tag + length + payload. Standard library only, in the subset MicroPython runs.
"""

import binascii
import struct

from protocol.errors import FormatError
from protocol.foreign import wrong_magic

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


def read_records(data: bytes, magic: bytes, major: int, what: str, max_record: int) -> list:
    """[(tag, payload, end, start)] of every record of a stream of `magic` (format version
    `major`), or of a prefix of one that ends on a record; `what` names the format in errors
    ("not a valid WHAT: ..."). FormatError for a bad header, another major version, a record
    over `max_record` bytes, a CRC mismatch, a prefix ending inside a record, or any byte
    after the DONE record that ends a stream."""

    def check(cond: bool, why: str) -> None:
        if not cond:
            raise FormatError("not a valid %s: %s" % (what, why))

    hn, rn = struct.calcsize(HEADER), struct.calcsize(RECORD)
    check(len(data) >= hn, "%d bytes, too short for a header" % len(data))
    got, file_major, minor = struct.unpack_from(HEADER, data)
    ext = what.split()[0]
    check(got == magic, wrong_magic(data[:64]))
    if file_major != major:
        raise FormatError(
            "unsupported %s format version %d.%d (this binsort reads %d.x); upgrade binsort"
            % (ext, file_major, minor, major)
        )
    out, at = [], hn
    while at < len(data):
        check(not out or out[-1][0] != b"DONE", "%d stray bytes after DONE" % (len(data) - at))
        check(at + rn <= len(data), "ends inside a record header at byte %d" % at)
        tag, length = struct.unpack_from(RECORD, data, at)
        check(length <= max_record, "a record of %d bytes is over the limit" % length)
        end = at + rn + length
        check(end + 4 <= len(data), "ends inside a record at byte %d" % at)
        crc = struct.unpack_from("<I", data, end)[0]
        check(
            binascii.crc32(data[at:end]) & 0xFFFFFFFF == crc,
            "CRC mismatch in the record at byte %d (%r)" % (at, tag),
        )
        out.append((bytes(tag), data[at + rn : end], end + 4, at))
        at = end + 4
    return out

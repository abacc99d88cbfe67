"""Consistent Overhead Byte Stuffing (Cheshire and Baker, 1999): a frame's bytes with every 0x00
removed, so 0x00 can delimit frames on a byte stream. Overhead: one byte per 254 bytes, plus one.

docs/format.md "Frames on a byte stream" uses it; MicroPython runs this module as it is.
"""

from protocol.errors import FormatError


def cobs_encode(data: bytes) -> bytes:
    """The COBS encoding of `data`; it contains no 0x00 byte."""
    out = bytearray()
    run = bytearray()
    for b in data:
        if b == 0:
            out.append(len(run) + 1)
            out += run
            run = bytearray()
        else:
            run.append(b)
            if len(run) == 254:
                out.append(255)
                out += run
                run = bytearray()
    out.append(len(run) + 1)
    out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Invert cobs_encode; FormatError for a 0x00 byte or a code that runs past the end."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FormatError("COBS data holds a zero byte")
        end = i + code
        if end > n:
            raise FormatError("COBS code runs past the end of the frame")
        block = data[i + 1 : end]
        if 0 in block:
            raise FormatError("COBS data holds a zero byte")
        out += block
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)

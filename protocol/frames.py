"""Frames of the transfer session on a byte stream (docs/format.md "Frames on a byte stream").

A frame is `version type session offset length payload crc32`, COBS-encoded and ended by one
0x00 byte. The decoder takes bytes in any pieces, skips garbage and damaged frames, and
resynchronises at the next 0x00, so a receiver that starts in the middle of a frame, or a line
that drops or corrupts bytes, loses only the frames it touched. Standard library only.
"""

import binascii
import struct

from protocol.cobs import cobs_decode, cobs_encode
from protocol.errors import FormatError

VERSION = 1
HEADER = (
    "<BBIIH"  # version, type, session, offset, payload length (no struct.Struct in MicroPython)
)
HEADER_SIZE = struct.calcsize(HEADER)
MAX_PAYLOAD = 4096

HELLO, OFFER, ACCEPT, DATA, ACK, DONE, RESULT, STATUS, ERROR = range(1, 10)
NAMES = {
    HELLO: "hello",
    OFFER: "offer",
    ACCEPT: "accept",
    DATA: "data",
    ACK: "ack",
    DONE: "done",
    RESULT: "result",
    STATUS: "status",
    ERROR: "error",
}


class Frame:
    __slots__ = ("kind", "session", "offset", "payload")

    def __init__(self, kind: int, session: int, offset: int, payload: bytes = b""):
        self.kind, self.session, self.offset, self.payload = kind, session, offset, payload

    def __repr__(self):
        return "Frame(%s, session=%d, offset=%d, %d bytes)" % (
            NAMES.get(self.kind, self.kind),
            self.session,
            self.offset,
            len(self.payload),
        )


def encode_frame(frame: Frame) -> bytes:
    """The frame's bytes on the line: COBS(header + payload + CRC32) + 0x00."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError("frame payload of %d bytes is over %d" % (len(frame.payload), MAX_PAYLOAD))
    body = (
        struct.pack(HEADER, VERSION, frame.kind, frame.session, frame.offset, len(frame.payload))
        + frame.payload
    )
    return cobs_encode(body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """One frame from its COBS bytes (without the 0x00); FormatError if it is damaged."""
    body = cobs_decode(encoded)
    if len(body) < HEADER_SIZE + 4:
        raise FormatError("frame of %d bytes is shorter than a header" % len(body))
    crc = struct.unpack_from("<I", body, len(body) - 4)[0]
    if binascii.crc32(body[:-4]) & 0xFFFFFFFF != crc:
        raise FormatError("frame CRC32 does not match")
    version, kind, session, offset, length = struct.unpack_from(HEADER, body, 0)
    if version != VERSION:
        raise FormatError("frame version %d, this side speaks %d" % (version, VERSION))
    if length != len(body) - HEADER_SIZE - 4:
        raise FormatError("frame length field does not match its size")
    if kind not in NAMES:
        raise FormatError("unknown frame type %d" % kind)
    return Frame(kind, session, offset, bytes(body[HEADER_SIZE : HEADER_SIZE + length]))


# the longest COBS encoding of a valid frame: a code byte per 254 bytes, plus one
MAX_ENCODED = HEADER_SIZE + MAX_PAYLOAD + 4 + (HEADER_SIZE + MAX_PAYLOAD + 4) // 254 + 2


class FrameDecoder:
    """Bytes in, frames out. `dropped` counts damaged frames and garbage runs skipped."""

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False
        self.dropped = 0

    def push(self, data: bytes) -> list:
        frames = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._take(data[start:])
                return frames
            self._take(data[start:end])
            if self._overflow:
                self.dropped += 1
            elif self._buf:
                try:
                    frames.append(decode_frame(bytes(self._buf)))
                except FormatError:
                    self.dropped += 1
            self._buf = bytearray()
            self._overflow = False
            start = end + 1

    def _take(self, part: bytes) -> None:
        if self._overflow:
            return
        self._buf += part
        if len(self._buf) > MAX_ENCODED:  # no delimiter where one had to be: garbage
            self._buf = bytearray()
            self._overflow = True

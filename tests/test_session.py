"""The receiver state machine on its own: negotiation, stale sessions, idempotent answers,
gaps and NAKs, a sink that refuses. Frames in, frames out, no sockets."""

import hashlib
import json
import struct

from protocol import frames as fr
from protocol.errors import FormatError
from protocol.session import OFFER_HEAD, Receiver


class ListSink:
    def __init__(self, refuse=None, resume=0, fail_write=None):
        self.refuse, self.resume, self.fail_write = refuse, resume, fail_write
        self.data = bytearray()
        self.finished = 0
        self.suspended = 0

    def offer(self, manifest):
        if self.refuse:
            raise FormatError(self.refuse)
        self.size = json.loads(manifest)["size"]
        return self.resume

    def write(self, data):
        if self.fail_write:
            raise OSError(28, "No space left on device")
        self.data += data
        return []

    def suspend(self):
        self.suspended += 1

    def finish(self):
        self.finished += 1
        return {"ok": True, "sha": hashlib.sha256(self.data).hexdigest()}


def start(sink, session=9, size=5000, frame=1000):
    rx = Receiver(lambda: sink)
    hello = json.dumps({"proto": [1], "max_payload": frame, "window": 4}).encode()
    (reply,) = rx.on_frame(fr.Frame(fr.HELLO, session, 0, hello), 0.0)
    assert reply.kind == fr.HELLO and json.loads(reply.payload)["max_payload"] == frame
    manifest = json.dumps({"size": size}).encode()
    out = rx.on_frame(
        fr.Frame(fr.OFFER, session, 0, struct.pack(OFFER_HEAD, len(manifest)) + manifest), 0.0
    )
    return rx, out


def naks(frame):
    return [n for (n,) in struct.iter_unpack("<I", frame.payload)]


def test_unknown_protocol_version_is_refused_with_an_error_frame():
    rx = Receiver(lambda: ListSink())
    (reply,) = rx.on_frame(fr.Frame(fr.HELLO, 3, 0, b'{"proto": [7]}'), 0.0)
    assert reply.kind == fr.ERROR and b"not supported" in reply.payload


def test_offer_is_accepted_at_the_resume_offset_and_repeats_get_the_same_answer():
    sink = ListSink(resume=2000)
    rx, (accept,) = start(sink)
    assert accept.kind == fr.ACCEPT and accept.offset == 2000
    manifest = json.dumps({"size": 5000}).encode()
    again = rx.on_frame(
        fr.Frame(fr.OFFER, 9, 0, struct.pack(OFFER_HEAD, len(manifest)) + manifest), 1.0
    )
    assert [(f.kind, f.offset) for f in again] == [(fr.ACCEPT, 2000)]


def test_frames_of_another_session_are_ignored():
    sink = ListSink()
    rx, _ = start(sink)
    assert rx.on_frame(fr.Frame(fr.DATA, 8, 0, b"x" * 1000), 0.0) == []
    assert sink.data == b""


def test_a_gap_is_nakked_then_filled_and_data_lands_in_order():
    sink = ListSink()
    rx, _ = start(sink)
    parts = [bytes([i]) * 1000 for i in range(5)]
    rx.on_frame(fr.Frame(fr.DATA, 9, 0, parts[0]), 0.0)
    out = rx.on_frame(fr.Frame(fr.DATA, 9, 2000, parts[2]), 0.1)
    assert out[-1].kind == fr.ACK and out[-1].offset == 1000 and naks(out[-1]) == [1000]
    out = rx.on_frame(fr.Frame(fr.DATA, 9, 3000, parts[3]), 0.2)
    assert naks(out[-1]) == []  # asked for less than a second ago
    out = rx.on_frame(fr.Frame(fr.DATA, 9, 1000, parts[1]), 0.3)
    assert out[-1].offset == 4000
    out = rx.on_frame(fr.Frame(fr.DONE, 9, 5000), 0.4)
    assert out[-1].kind == fr.ACK and naks(out[-1]) == [4000]  # DONE asks for the lost tail
    rx.on_frame(fr.Frame(fr.DATA, 9, 4000, parts[4]), 0.5)
    (result,) = rx.on_frame(fr.Frame(fr.DONE, 9, 5000), 0.6)
    assert result.kind == fr.RESULT and bytes(sink.data) == b"".join(parts)
    (again,) = rx.on_frame(fr.Frame(fr.DONE, 9, 5000), 0.7)
    assert again.payload == result.payload and sink.finished == 1


def test_a_refused_offer_ends_the_session_with_the_reason():
    rx, (err,) = start(ListSink(refuse="the manifest is unsigned"))
    assert err.kind == fr.ERROR and err.payload == b"the manifest is unsigned"
    (again,) = rx.on_frame(fr.Frame(fr.DATA, 9, 0, b"x"), 0.0)
    assert again.kind == fr.ERROR


def test_a_disk_error_becomes_an_error_frame_not_a_crash():
    rx, _ = start(ListSink(fail_write=True))
    (err,) = rx.on_frame(fr.Frame(fr.DATA, 9, 0, b"x" * 1000), 0.0)
    assert err.kind == fr.ERROR and b"No space left" in err.payload


def test_data_beyond_the_size_is_refused_and_a_lost_link_suspends_the_sink():
    sink = ListSink()
    rx, _ = start(sink, size=1500)
    rx.on_frame(fr.Frame(fr.DATA, 9, 0, b"a" * 1000), 0.0)
    (err,) = rx.on_frame(fr.Frame(fr.DATA, 9, 1000, b"b" * 1000), 0.0)
    assert err.kind == fr.ERROR and b"beyond the payload size" in err.payload
    rx.link_lost()
    assert sink.suspended == 1

"""The transfer session: one signed payload from a sender to a receiver over a byte link
(docs/format.md "Transfer session").

    sender                                   receiver
    HELLO {proto, max_payload, window}  ->
                                        <-   HELLO {proto, max_payload, window}
    OFFER (manifest, in pieces)         ->   checks signature, version, size, replay
                                        <-   ACCEPT offset (resume point) | ERROR
    DATA offset ... (a window of them)  ->   writes in order, keeps later frames
                                        <-   ACK cumulative offset + offsets it misses (NAK)
                                        <-   STATUS (a .pranc prefix was installed)
    DONE size                           ->   verifies, installs
                                        <-   RESULT {ok, slot, ...} | ERROR

Every request is repeated on a timeout (from the link's byte rate and the measured round
trip, doubled on each retry, bounded), and every reply is idempotent, so lost, damaged,
duplicated and reordered frames cost time, never correctness. Frames of another session are
ignored, so bytes left on a serial line by an earlier session do no harm.

`Receiver` is a pure state machine (frames in, frames out, time passed in) in the subset that
MicroPython runs; what it stores goes through a sink (edge.install.receiver). `Sender` drives a
link.
"""

import json
import struct

from protocol import frames as fr
from protocol.errors import BinsortError, FormatError

PROTO = 1
FRAME_PAYLOAD = 1024
WINDOW = 8  # frames in flight
OFFER_HEAD = "<I"  # total manifest length, before each OFFER piece
OFFER_HEAD_SIZE = 4
MAX_ERROR = 300  # bytes of an ERROR frame's message: never the peer's input at full length


class LinkClosed(BinsortError):
    """The link went away (EOF, reset, device unplugged)."""


class RemoteError(BinsortError):
    """The receiver refused: its ERROR frame's message."""


RESUME_AT = "resume at byte "  # an ERROR that starts so: the receiver dropped bytes it had


def resume_again(message: str, offset: int) -> str:
    """The message of an ERROR that ends a session but not the shipment: the receiver dropped
    bytes an earlier session had left (they failed their chunk's hash), and a new session
    resumes at `offset` (docs/format.md "Transfer session")."""
    return "%s%d: %s" % (RESUME_AT, offset, message)


class ResumeAgain(RemoteError):
    """The receiver dropped bytes kept from an earlier session; a new session resumes."""


def to_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def from_json(payload: bytes):
    """A frame's JSON; FormatError for anything else, however deep or odd (RuntimeError is
    CPython's RecursionError and MicroPython's recursion limit)."""
    try:
        return json.loads(bytes(payload).decode())
    except (ValueError, UnicodeError, RuntimeError, MemoryError):
        raise FormatError("a session frame holds invalid JSON") from None


def bounded(message: str, limit: int = MAX_ERROR) -> bytes:
    """An error message as at most `limit` bytes of UTF-8."""
    data = str(message).encode()
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode() + b"..."


def is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 31


class Receiver:
    """The receiving side. `on_frame(frame, now)` returns the frames to send back.

    `open_sink()` gives a fresh sink for each offer. A sink has: offer(manifest_bytes) ->
    resume offset (raises BinsortError to refuse), `size`, write(data) -> a list of status
    dicts (in-order bytes; raises to abort), finish() -> result dict, and suspend() (make what
    was received durable; called when the peer goes)."""

    def __init__(self, open_sink, max_payload: int = FRAME_PAYLOAD, window: int = WINDOW):
        self.open_sink = open_sink
        self.sink = None
        self.max_payload = max_payload
        self.window = window
        self.session = None
        self._reset()

    def _reset(self):
        self.sink = None
        self.frame_size = self.max_payload
        self.manifest = bytearray()
        self.manifest_len = None
        self.size = None
        self.offset = None  # next byte wanted; None until an offer is accepted
        self.ahead = {}  # offset -> data received beyond a gap
        self.nak_sent = {}  # offset -> when it was last asked for
        self.result = None
        self.error = None

    def on_frame(self, frame, now: float) -> list:
        """The replies to one frame. Nothing a peer sends escapes as an exception: a refusal
        or a failure of the sink's disk is an ERROR frame, and so is any other error, which
        also ends the session (the sink keeps what was verified)."""
        try:
            return self._on_frame(frame, now)
        except Exception as e:  # noqa: BLE001 (a peer must never stop the receiver)
            self._fail("internal error: %s" % type(e).__name__)
            return [fr.Frame(fr.ERROR, frame.session, 0, bounded(self.error))]

    def _on_frame(self, frame, now: float) -> list:
        if frame.kind == fr.HELLO:
            return self._hello(frame)
        if frame.session != self.session:
            return []  # a stale frame from an earlier session
        if self.error is not None:
            return [self._frame(fr.ERROR, 0, bounded(self.error))]
        try:
            if frame.kind == fr.OFFER:
                return self._offer(frame)
            if self.offset is None:
                return []
            if frame.kind == fr.DATA:
                return self._data(frame, now)
            if frame.kind == fr.DONE:
                return self._done(now)
        except (BinsortError, OSError) as e:  # OSError: the sink's disk (full, read-only)
            self._fail(str(e))
            return [self._frame(fr.ERROR, 0, bounded(self.error))]
        return []

    def _fail(self, message: str) -> None:
        """End the session: what was verified is kept (the sink is suspended, once), and every
        later frame of the session gets `message` back."""
        self.error = message
        self.link_lost()
        self.sink = None

    def link_lost(self) -> None:
        if self.sink is not None and self.result is None:
            self.sink.suspend()

    def _frame(self, kind, offset, payload=b""):
        return fr.Frame(kind, self.session, offset, payload)

    def _hello(self, frame):
        req = None
        try:  # noqa: SIM105 (MicroPython has no contextlib)
            req = from_json(frame.payload)
        except FormatError:
            pass
        if not isinstance(req, dict):
            return [fr.Frame(fr.ERROR, frame.session, 0, b"malformed hello")]
        protos = req.get("proto", [])
        size = req.get("max_payload", FRAME_PAYLOAD)
        window = req.get("window", WINDOW)
        if not (
            isinstance(protos, list)
            and len(protos) <= 16
            and all(is_count(p) for p in protos)
            and is_count(size)
            and is_count(window)
        ):
            return [fr.Frame(fr.ERROR, frame.session, 0, b"malformed hello")]
        if PROTO not in protos:
            msg = "protocol not supported; this receiver speaks %d" % PROTO
            return [fr.Frame(fr.ERROR, frame.session, 0, msg.encode())]
        if frame.session != self.session:
            if self.session is not None:
                self.link_lost()
            self.session = frame.session
            self._reset()
        self.frame_size = max(16, min(size, self.max_payload))
        window = min(window, self.window)
        reply = {"proto": PROTO, "max_payload": self.frame_size, "window": window}
        return [self._frame(fr.HELLO, 0, to_json(reply))]

    def _offer(self, frame):
        if self.offset is not None:  # a repeated offer: the answer stands
            return [self._frame(fr.ACCEPT, self.offset)]
        if len(frame.payload) < OFFER_HEAD_SIZE:
            raise FormatError("short offer frame")
        total = struct.unpack_from(OFFER_HEAD, frame.payload)[0]
        if self.manifest_len not in (None, total) or total > 1 << 20:
            raise FormatError("offer frames disagree on the manifest length")
        self.manifest_len = total
        if frame.offset == len(self.manifest):
            self.manifest += frame.payload[OFFER_HEAD_SIZE:]
        if len(self.manifest) < total:
            return []
        self.sink = self.open_sink()
        self.offset = self.sink.offer(bytes(self.manifest[:total]))
        self.size = self.sink.size
        return [self._frame(fr.ACCEPT, self.offset)]

    def _data(self, frame, now):
        out = []
        if frame.offset + len(frame.payload) > self.size:
            raise FormatError("data beyond the payload size of %d bytes" % self.size)
        if frame.offset == self.offset:
            out += self._write(frame.payload)
            while self.offset in self.ahead:
                out += self._write(self.ahead.pop(self.offset))
        elif (
            self.offset < frame.offset < self.offset + self.window * self.frame_size
            and (frame.offset - self.offset) % self.frame_size == 0
            and len(frame.payload) <= self.frame_size
            and len(self.ahead) < self.window
        ):  # held for later: only on the sender's frame grid, at most a window of it
            self.ahead[frame.offset] = frame.payload
        out.append(self._ack(now))
        return out

    def _write(self, data):
        events = self.sink.write(data)
        self.nak_sent.pop(self.offset, None)
        self.offset += len(data)
        return [self._frame(fr.STATUS, self.offset, to_json(e)) for e in events]

    def _ack(self, now, all_missing=False):
        """Cumulative offset, then the offsets of missing frames below the highest one held
        (or, at DONE, up to the end), each asked for at most once a second."""
        top = max(self.ahead) if self.ahead else self.offset
        if all_missing:
            top = self.size
        naks = []
        at = self.offset
        while at < top and len(naks) < 64:
            if at not in self.ahead and now - self.nak_sent.get(at, -1e9) >= 1.0:
                naks.append(at)
                self.nak_sent[at] = now
            at += self.frame_size
        return self._frame(fr.ACK, self.offset, b"".join(struct.pack("<I", n) for n in naks))

    def _done(self, now):
        if self.offset < self.size:
            return [self._ack(now, all_missing=True)]
        if self.result is None:
            self.result = self.sink.finish()
        return [self._frame(fr.RESULT, self.size, to_json(self.result))]


def pump(
    link,
    receiver,
    idle_timeout: float,
    clock,
    persistent: bool = False,
    until=None,
    deadline: "float | None" = None,
    first_frame: "float | None" = None,
) -> None:
    """Run `receiver` on `link` until the link closes, or (unless `persistent`, as a serial
    line is) until the peer sends no valid frame for `idle_timeout` seconds: bytes that decode
    to nothing do not keep a connection open. `deadline` (seconds from now) ends the
    connection however busy it is, so no peer holds the receiver for ever; a sender resumes
    on a new one. `first_frame` (seconds) is how long a new peer may take to send its first
    valid frame: connections that never speak the protocol are let go early. When the peer
    goes, what was received is made durable so a later session resumes after it. Once
    `until()` is true, return after two quiet seconds (time for a lost RESULT to be asked for
    again)."""
    decoder = fr.FrameDecoder()
    last = clock()
    end = None if deadline is None else last + deadline
    quiet_limit = idle_timeout if first_frame is None else min(first_frame, idle_timeout)
    try:
        while True:
            data = link.read(0.5)
            now = clock()
            if end is not None and now > end:
                return
            frames = decoder.push(data) if data else []
            if not frames:
                finished = until is not None and until()
                if finished and now - last > 2.0:
                    return
                if now - last > quiet_limit:
                    receiver.link_lost()
                    if not persistent:
                        return
                    last = now
                continue
            last, quiet_limit = now, idle_timeout
            for frame in frames:
                for reply in receiver.on_frame(frame, now):
                    link.write(fr.encode_frame(reply))
    except LinkClosed:
        return
    finally:
        receiver.link_lost()

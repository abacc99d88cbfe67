"""The sending side of the transfer session (protocol.session has the message flow).

A sliding window of DATA frames; the receiver's cumulative ACKs move it, and its NAKs resend
single frames. On a link of known rate (a serial line's baud rate) the sender knows when each
frame it wrote can have reached the device: a NAK that predates that is not acted on (the frame
is still on its way), and the timeout runs from when the line has drained what was written, so
a slow line's queue is not taken for a loss. A timeout with no progress resends the first
unacknowledged frame and asks the device, with DONE, for everything it misses; the answer lists
them, so a lost frame costs one frame on the line, not a window (where a window drains within
the timeout, or the rate is unknown, it goes back and sends the window again). The timeout
starts from the link's byte rate and then follows the measured round trip (Jacobson/Karels,
Karn's rule for resent frames), doubling on every retry up to a bounded count.
"""

import os
import struct
import time

from protocol import frames as fr
from protocol.errors import BinsortError
from protocol.session import (
    FRAME_PAYLOAD,
    OFFER_HEAD,
    OFFER_HEAD_SIZE,
    PROTO,
    RESUME_AT,
    WINDOW,
    RemoteError,
    ResumeAgain,
    from_json,
    is_count,
    to_json,
)

GIVE_UP_S = 60.0  # no intact frame from the device for this long: stop and say why


class Stalled(BinsortError):
    """No progress after every retry."""


class Hopeless(BinsortError):
    """Nothing intact came back from the device for LinkWatch.give_up seconds."""


class LinkWatch:
    """What came back from the device over a link, across every reconnect of one shipment,
    and when to stop trying. Retries and reconnects ride out a link that loses some frames;
    one on which no frame gets through intact for `give_up` seconds (None: never) is not
    going to deliver, and the user wants the symptom, not another minute of backoff: every
    frame damaged, no answer at all, or no connection. What reached the device stays in its
    `.partial` file, so the next try resumes there."""

    def __init__(self, give_up: "float | None" = GIVE_UP_S, clock=time.monotonic):
        self.give_up, self.clock = give_up, clock
        self.since = clock()  # the last intact frame (or the start)
        self.bytes_in = self.damaged = self.connects = 0
        self.connect_error = None
        self.busy = False  # the whole payload acknowledged: the device is verifying it

    def heard(self, nbytes: int, intact: int, damaged: int) -> None:
        self.bytes_in += nbytes
        self.damaged += damaged
        if intact:
            self.since = self.clock()
        self.check()

    def connected(self) -> None:
        self.connects += 1
        self.connect_error = None

    def connect_failed(self, error: Exception) -> None:
        self.connect_error = str(error)
        self.check()

    def check(self) -> None:
        if self.busy:
            self.since = self.clock()
        if self.give_up is not None and self.clock() - self.since >= self.give_up:
            raise Hopeless(self.symptom())

    def symptom(self) -> str:
        took = "for %d s" % round(self.give_up)
        if self.connect_error is not None:
            return "no connection to the device %s: %s" % (took, self.connect_error)
        if self.damaged or self.bytes_in:
            return (
                "every frame from the device arrived damaged %s (%d damaged, none intact, "
                "over %d connections): the link corrupts data; check the cable, the baud rate "
                "and the line settings" % (took, self.damaged, self.connects)
            )
        return (
            "no answer from the device %s (over %d connections): is its receiver running, and "
            "does the link carry data to it? A link that damages every frame on its way to the "
            "device looks the same from here" % (took, self.connects)
        )


class Sender:
    """Ships one payload over one link. `progress(acked, size)` is called as ACKs arrive and
    `status(dict)` for every STATUS the receiver sends (a `.pranc` prefix installed)."""

    def __init__(
        self,
        link,
        rate=None,
        progress=None,
        status=None,
        max_payload: int = FRAME_PAYLOAD,
        window: int = WINDOW,
        retries: int = 8,
        clock=time.monotonic,
        watch: "LinkWatch | None" = None,
    ):
        self.link = link
        self.rate = rate  # bytes per second, None when unknown (then assume a fast link)
        self.progress = progress or (lambda acked, size: None)
        self.status = status or (lambda info: None)
        self.max_payload, self.window, self.retries = max_payload, window, retries
        self.clock = clock
        self.watch = watch or LinkWatch(None, clock)
        self.session = struct.unpack("<I", os.urandom(4))[0] or 1
        self.decoder = fr.FrameDecoder()
        self.frame_size = max_payload
        self.srtt = self.rttvar = None
        self.min_rto = self._drain_time(1) + 0.2
        self.rto = max(1.0, 2 * self._drain_time(window) + 0.5)
        self.start_offset = self.acked = None  # where this session resumed, how far it got
        self.line_free = 0.0  # when what was written has left the sender (a known rate only)
        self.arrive = {}  # DATA offset -> when its last copy can have reached the device

    def _drain_time(self, frames: int) -> float:
        """Seconds the link needs for `frames` full DATA frames (0 when the rate is unknown)."""
        if not self.rate:
            return 0.0
        return frames * (self.frame_size + fr.HEADER_SIZE + 12) / self.rate

    # -- frames ----------------------------------------------------------------------------

    def _send(self, kind, offset, payload=b""):
        data = fr.encode_frame(fr.Frame(kind, self.session, offset, payload))
        self.link.write(data)
        now = self.clock()
        self.line_free = max(now, self.line_free) + (len(data) / self.rate if self.rate else 0)
        if kind == fr.DATA:
            self.arrive[offset] = self.line_free

    def _frames(self, timeout: float) -> list:
        out = []
        data, dropped = self.link.read(timeout), self.decoder.dropped
        got = self.decoder.push(data)
        self.watch.heard(len(data), len(got), self.decoder.dropped - dropped)
        for f in got:
            if f.session != self.session:
                continue
            if f.kind == fr.ERROR:
                why = bytes(f.payload).decode("utf-8", "replace")
                if why.startswith(RESUME_AT):
                    raise ResumeAgain("the device dropped bytes it had kept: %s" % why)
                raise RemoteError("the device refused the model: %s" % why)
            out.append(f)
        return out

    def _request(self, send, kinds) -> fr.Frame:
        """Call send() until a frame of one of `kinds` answers, with backoff."""
        rto = self.rto
        for _ in range(self.retries + 1):
            send()
            deadline = self.clock() + rto
            while self.clock() < deadline:  # a second at most a read: the watch looks each time
                for f in self._frames(min(1.0, max(0.0, deadline - self.clock()))):
                    if f.kind in kinds:
                        return f
            rto *= 2
        raise Stalled("no answer from the device after %d tries" % (self.retries + 1))

    # -- the session -----------------------------------------------------------------------

    def ship(self, manifest: bytes, payload: bytes) -> dict:
        """Offer, transfer and wait for the receiver's verdict; returns its RESULT dict."""
        hello = to_json({"proto": [PROTO], "max_payload": self.max_payload, "window": self.window})
        reply = self._request(lambda: self._send(fr.HELLO, 0, hello), (fr.HELLO,))
        info = from_json(reply.payload)
        size = info.get("max_payload") if isinstance(info, dict) else None
        window = info.get("window") if isinstance(info, dict) else None
        if not (is_count(size) and 16 <= size <= self.max_payload):
            raise BinsortError("the device answered HELLO with a frame size of %.40r" % (size,))
        if not (is_count(window) and window <= self.window):
            raise BinsortError("the device answered HELLO with a window of %.40r" % (window,))
        self.frame_size, self.window = size, window
        piece = self.frame_size - OFFER_HEAD_SIZE
        head = struct.pack(OFFER_HEAD, len(manifest))

        def offer():
            for at in range(0, len(manifest), piece):
                self._send(fr.OFFER, at, head + manifest[at : at + piece])

        accept = self._request(offer, (fr.ACCEPT,))
        return self._transfer(payload, accept.offset)

    def _transfer(self, payload: bytes, base: int) -> dict:
        size, fs = len(payload), self.frame_size
        nxt = base
        sent_at, resent = {}, set()
        tries, last_progress = 0, self.clock()
        self.start_offset = self.acked = base
        self.progress(base, size)
        done_at = None
        while True:
            now = self.clock()
            while nxt < size and nxt < base + self.window * fs:
                self._send(fr.DATA, nxt, payload[nxt : nxt + fs])
                if nxt in sent_at:
                    resent.add(nxt)
                sent_at[nxt] = now
                nxt += fs
            if nxt >= size and done_at is None:
                self._send(fr.DONE, size)
                done_at = now
            quiet = max(last_progress, self.line_free)  # the line busy with ours is not a stall
            wait = max(0.01, quiet + self.rto * 2**tries - self.clock())
            for f in self._frames(min(wait, 0.5)):
                if f.kind == fr.RESULT:
                    self.progress(size, size)
                    return from_json(f.payload)
                if f.kind == fr.STATUS:
                    self.status(from_json(f.payload))
                elif f.kind == fr.ACK:
                    if f.offset > base:
                        if f.offset - base <= fs:  # one frame: not one held behind a gap
                            self._measure(f.offset, fs, sent_at, resent)
                        base = self.acked = f.offset
                        tries, last_progress = 0, self.clock()
                        self.watch.busy = base >= size
                        self.progress(base, size)
                    for (n,) in struct.iter_unpack("<I", f.payload):
                        if base <= n < nxt and not self._on_its_way(n):
                            self._send(fr.DATA, n, payload[n : n + fs])
                            resent.add(n)
            if self.clock() - max(last_progress, self.line_free) >= self.rto * 2**tries:
                tries += 1
                if tries > self.retries:
                    raise Stalled(
                        "the transfer stalled at byte %d of %d after %d retries"
                        % (base, size, self.retries)
                    )
                if not self.rate or self._drain_time(self.window) <= self.rto:
                    nxt, done_at = base, None  # a fast line: sending the window again is cheap
                else:  # a slow one: the first unacknowledged frame, and what else is missing?
                    if base < nxt:
                        self._send(fr.DATA, base, payload[base : base + fs])
                        resent.add(base)
                    self._send(fr.DONE, size)  # answered by an ACK listing the missing frames
                last_progress = self.clock()

    def _on_its_way(self, n: int) -> bool:
        """Whether a NAK of frame n may predate the arrival of the copy last sent (it was
        written after the device answered, e.g. DONE's list of what it misses): then the frame
        is on its way and is not sent again. On a line of known rate the sender knows when that
        copy can have arrived (a NAK then needs about half the measured round trip and an ACK's
        time on the line to come back); otherwise no NAK comes back sooner than half a round
        trip after the write."""
        if n not in self.arrive:  # not an offset this sender wrote: a confused or hostile peer
            return True
        # srtt is measured from arrival where the rate is known, from the write where not
        back = 0.5 * (self.srtt or 0.0) + (64 / self.rate if self.rate else 0.0)
        return self.clock() < self.arrive[n] + back

    def _measure(self, acked: int, fs: int, sent_at: dict, resent: set) -> None:
        start = acked - ((acked - 1) % fs + 1)  # the frame that ends at or before `acked`
        if start not in sent_at or start in resent:
            return
        # from when the frame can have reached the device: a slow line's queue is not the trip
        rtt = self.clock() - (self.arrive[start] if self.rate else sent_at[start])
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(60.0, max(self.min_rto, self.srtt + 4 * self.rttvar))

"""A serial line in simulated time, for the sender's behaviour on slow, lossy links: each
direction carries `rate` bytes a second, frames queue behind each other, and a rule decides
which transmissions are lost. The receiver is the real protocol.session.Receiver; the sender's
clock is the simulation's, so a 9,600-baud transfer of minutes runs in a fraction of a second."""

import heapq

from protocol import frames as fr


class SimClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class SimSerial:
    """The sender's end of the line. `lose(kind, offset, n)` says whether the n-th
    transmission (from 1) of a frame of that kind and offset in that direction is lost;
    `direction` is "fwd" (to the receiver) or "rev"."""

    def __init__(self, receiver, rate: float, lose=None, clock=None):
        self.receiver, self.rate = receiver, rate
        self.lose = lose or (lambda direction, kind, offset, n: False)
        self.clock = clock or SimClock()
        self.free = {"fwd": 0.0, "rev": 0.0}  # when each direction's queue has drained
        self.events = []  # (arrival time, order, direction, frame bytes)
        self.order = 0
        self.counts = {}
        self.sent = []  # (time, kind, offset) of every frame the sender wrote
        self.decoder = fr.FrameDecoder()

    def _queue(self, direction: str, data: bytes, kind: int, offset: int) -> None:
        t = max(self.clock.t, self.free[direction]) + len(data) / self.rate
        self.free[direction] = t
        key = (direction, kind, offset)
        self.counts[key] = self.counts.get(key, 0) + 1
        if not self.lose(direction, kind, offset, self.counts[key]):
            self.order += 1
            heapq.heappush(self.events, (t, self.order, direction, data))

    def write(self, data: bytes) -> None:
        for frame in fr.FrameDecoder().push(data):
            self.sent.append((self.clock.t, frame.kind, frame.offset))
            self._queue("fwd", fr.encode_frame(frame), frame.kind, frame.offset)

    def read(self, timeout: float) -> bytes:
        until = self.clock.t + timeout
        while self.events and self.events[0][0] <= until:
            t, _, direction, data = heapq.heappop(self.events)
            self.clock.t = max(self.clock.t, t)
            if direction == "rev":
                return data
            for frame in self.decoder.push(data):
                for reply in self.receiver.on_frame(frame, self.clock.t):
                    self._queue("rev", fr.encode_frame(reply), reply.kind, reply.offset)
        self.clock.t = max(self.clock.t, until)
        return b""

    def data_frames(self) -> int:
        return sum(1 for _, kind, _ in self.sent if kind == fr.DATA)

"""The sender on a slow, lossy line, in simulated time (tests/simlink.py) against the real
receiver state machine: what each lost frame costs in time and in frames on the line."""

import json
import random
import struct

from protocol import frames as fr
from protocol.sender import Sender
from protocol.session import Receiver
from tests.simlink import SimSerial
from tests.test_session import ListSink

BAUD_9600 = 960.0  # bytes a second, 10 bits a byte


def ship(size: int, rate: float, lose=None, rate_known: bool = True):
    """(seconds it took, DATA frames written, the link) for one shipment of `size` bytes."""
    sink = ListSink()
    link = SimSerial(Receiver(lambda: sink), rate, lose)
    sender = Sender(link, rate=rate if rate_known else None, clock=link.clock)
    payload = random.Random(size).randbytes(size)
    result = sender.ship(json.dumps({"size": size}).encode(), payload)
    assert result["ok"] and bytes(sink.data) == payload
    return link.clock.t, link.data_frames(), link


def test_a_lost_frame_on_a_slow_line_costs_one_frame_not_a_window():
    """At 9,600 baud a window of 8 KiB takes 8.7 s to drain: the sender must not take that
    queue for a loss, resend frames the device holds, or answer every repeated NAK of a frame
    that is already on its way again."""
    clean, frames, _ = ship(51_519, BAUD_9600)
    assert frames == 51
    lost = {(fr.DATA, 3 * 1024), (fr.DATA, 20 * 1024), (fr.DATA, 50 * 1024)}

    def lose(direction, kind, offset, n):
        return direction == "fwd" and n == 1 and (kind, offset) in lost

    took, frames, _ = ship(51_519, BAUD_9600, lose)
    assert frames == 51 + 3
    assert took <= clean + 3 * 1.2 + 6.0  # each loss: its frame again, and a round trip or so


def test_a_resend_that_is_lost_too_is_asked_for_again():
    def lose(direction, kind, offset, n):  # frame 5 lost twice, and the first ACKs after it
        return (direction == "fwd" and kind == fr.DATA and offset == 5 * 1024 and n <= 2) or (
            direction == "rev" and kind == fr.ACK and offset == 5 * 1024 and n <= 3
        )

    clean, _, _ = ship(20_000, BAUD_9600)
    took, frames, _ = ship(20_000, BAUD_9600, lose)
    assert frames <= 20 + 4 and took <= clean + 20.0


def test_five_percent_of_frames_lost_both_ways_cost_a_fraction_of_the_time():
    """Issue 19's weak link: 9,600 baud with 5% of the frames lost in each direction. Ten
    draws of the losses; before the sender knew its line's queue, the median took 1.6 times the
    clean time and the worst 4.6 times."""
    clean, _, _ = ship(51_519, BAUD_9600)
    times = []
    for seed in range(10):
        draw = random.Random(seed)
        took, _, _ = ship(51_519, BAUD_9600, lambda d, k, o, n, draw=draw: draw.random() < 0.05)
        times.append(took / clean)
    times.sort()
    assert times[5] <= 1.25 and times[-1] <= 1.6, times


def test_a_fast_line_of_unknown_rate_still_recovers_by_sending_the_window_again():
    for seed in range(5):
        draw = random.Random(seed)
        took, frames, _ = ship(
            100_000, 1e6, lambda d, k, o, n, draw=draw: draw.random() < 0.1, rate_known=False
        )
        assert took < 10.0 and frames < 2 * 98


def test_naks_of_offsets_never_sent_are_ignored():
    """A device that NAKs offsets off the sender's frame grid (a bug, or a hostile peer) gets
    no frames for them and no traceback: the transfer completes."""

    class Confused(Receiver):
        def on_frame(self, frame, now):
            out = super().on_frame(frame, now)
            return [
                fr.Frame(r.kind, r.session, r.offset, r.payload + struct.pack("<I", r.offset + 1))
                if r.kind == fr.ACK and r.offset < 5000
                else r
                for r in out
            ]

    sink = ListSink()
    link = SimSerial(Confused(lambda: sink), BAUD_9600)
    payload = random.Random(1).randbytes(9000)
    result = Sender(link, rate=BAUD_9600, clock=link.clock).ship(b'{"size": 9000}', payload)
    assert result["ok"] and bytes(sink.data) == payload
    assert all(offset % 1024 == 0 for _, kind, offset in link.sent if kind == fr.DATA)

"""What a decision does: pulse a diverter, tell a PLC, or only log it.

Timing comes from the photons. A decision carries `t`, the time its box's centre passed the
camera's centre line (the photo-eye's line), on the frames' clock (edge.line.decide). The box
reaches lane L's diverter `distance(L) / belt_speed` seconds later; its pulse starts `lead`
before that and lasts `pulse`, so the diverter is out when the box's centre arrives:

    on = t + distance(L) / belt_speed - lead        off = on + pulse

A decision comes only after its box has left the view, so `on` may be close. When it has already
passed, the pulse starts at once if the box's centre has not yet reached the diverter
(counted in `late_start`); if it has, nothing fires (the box's window is gone, counted in
`late` and logged): a pulse then would only hit the next box. Every planned pulse is kept in
`plan` for scoring (edge.line.sources.conveyor.score_sorting).

The safe state is every output off and nothing pending: it holds at start, when no valid model
is active, and on shutdown. While a model is being swapped the actuator is held: nothing new
starts until release().

Pulses run on a thread of their own against time.monotonic(), the clock of real frames. With
a virtual clock (the simulator's frames) `drive(clock)` hands the timing to the frame loop,
which calls `advance()` after each frame and `flush()` at the end.

- `gpio`: one gpiozero OutputDevice per lane, pulsed from `on` to `off`.
- `plc`: one text line per box on a serial line to a PLC, which times the diverter itself
  (docs/format.md "PLC line protocol"): `SORT <seq> <lane> <in_ms>`, in_ms the milliseconds
  from sending until the diverter must be on, and `SAFE` for the safe state.
- `log`: keeps the pulses in memory and prints them (dry runs and tests).
"""

import collections
import heapq
import threading
import time

from protocol.errors import BinsortError

PLAN_KEPT = 20000  # planned pulses kept for scoring and the status


class Actuator:
    """The scheduling part; subclasses say what on/off/safe mean."""

    kind = "base"

    def __init__(
        self, lanes, distances: dict, belt_mps: float, pulse_s: float, lead_s=0.0, log=None
    ):
        self.lanes = list(lanes)
        self.travel_s = {lane: distances[lane] / belt_mps for lane in self.lanes}
        self.pulse_s, self.lead_s = pulse_s, lead_s
        self.log = log or (lambda line: None)
        self.clock = time.monotonic
        self.manual = False  # True: the frame loop drives the timing (a virtual clock)
        self.queue = []  # (time, order, action, lane)
        self.order = 0
        self.held = False
        self.cond = threading.Condition()
        self.stopping = False
        self.fired = {lane: 0 for lane in self.lanes}
        self.late = 0  # boxes whose diverter moment had passed when they were decided
        self.late_start = 0  # pulses started late, still before the box's centre arrived
        self.plan = collections.deque(maxlen=PLAN_KEPT)
        self.thread = threading.Thread(target=self._run, name="actuator", daemon=True)
        self.thread.start()

    def drive(self, clock) -> None:
        """Time pulses on `clock` (a virtual one), moved on by advance() and flush()."""
        with self.cond:
            self.clock, self.manual = clock, True
            self.cond.notify()

    def fire(self, lane: str, seq: int, t_ref: float) -> dict:
        """Plan the pulse for box `seq`, whose centre passed the camera's line at `t_ref`."""
        if lane not in self.fired:
            raise BinsortError("no actuator output for lane %r" % lane)
        now = self.clock()
        arrives = t_ref + self.travel_s[lane]
        on, off = arrives - self.lead_s, arrives - self.lead_s + self.pulse_s
        entry = {"seq": seq, "lane": lane, "decided": now, "on": on, "off": off}
        entry["late"] = now > arrives
        self.plan.append(entry)
        if entry["late"]:
            self.late += 1
            self.log(
                "box %d -> lane %s: decided %.0f ms after it reached the diverter; not fired"
                % (seq, lane, 1000 * (now - arrives))
            )
            return entry
        if now > on:
            self.late_start += 1
        entry["start"] = max(on, now)
        self._schedule(lane, seq, entry["start"], off, now)
        self.fired[lane] += 1
        return entry

    def _schedule(self, lane, seq, on, off, now) -> None:
        with self.cond:
            self._push(on, "on", lane)
            self._push(off, "off", lane)
            self.cond.notify()

    def _push(self, t, action, lane):
        heapq.heappush(self.queue, (t, self.order, action, lane))
        self.order += 1

    def hold(self) -> None:
        with self.cond:
            self.held = True

    def release(self) -> None:
        with self.cond:
            self.held = False
            self.cond.notify()

    def safe(self) -> None:
        """Everything off, nothing pending."""
        with self.cond:
            self.queue.clear()
            self._safe()

    def close(self) -> None:
        self.safe()
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=5)
        self._close()

    def advance(self, now=None) -> None:
        """Carry out what is due by `now` (the clock's time by default)."""
        now = self.clock() if now is None else now
        with self.cond:
            while self.queue and self.queue[0][0] <= now:
                if self.held and self.queue[0][2] == "on":
                    break
                _, _, action, lane = heapq.heappop(self.queue)
                (self._on if action == "on" else self._off)(lane)

    def flush(self) -> None:
        """Carry out every planned pulse now, in order (the end of a virtual run: the boxes
        still on the belt reach their diverters)."""
        self.advance(float("inf"))

    def _run(self) -> None:
        with self.cond:
            while not self.stopping:
                if self.manual or not self.queue or (self.held and self.queue[0][2] == "on"):
                    self.cond.wait(0.05 if self.queue and not self.manual else None)
                    continue
                t, _, action, lane = self.queue[0]
                wait = t - self.clock()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(self.queue)
                (self._on if action == "on" else self._off)(lane)

    def _on(self, lane):
        raise NotImplementedError

    def _off(self, lane):
        raise NotImplementedError

    def _safe(self):
        raise NotImplementedError

    def _close(self):
        pass

    def summary(self) -> dict:
        return {"fired": dict(self.fired), "late": self.late, "late_start": self.late_start}


class LogActuator(Actuator):
    kind = "log"

    def __init__(self, *args, **kwargs):
        self.events = []  # (time on the actuator's clock, "on"|"off"|"safe", lane)
        Actuator.__init__(self, *args, **kwargs)

    def _on(self, lane):
        self.events.append((self.clock(), "on", lane))

    def _off(self, lane):
        self.events.append((self.clock(), "off", lane))

    def _safe(self):
        self.events.append((self.clock(), "safe", None))


class GpioActuator(Actuator):
    kind = "gpio"

    def __init__(self, pins: dict, *timing, log=None):
        from gpiozero.exc import GPIOZeroError

        from edge.line.gpio import output_device

        self.outputs = {}
        try:
            for lane, pin in pins.items():
                self.outputs[lane] = output_device(pin)
        except GPIOZeroError as e:
            for dev in self.outputs.values():
                dev.close()
            raise BinsortError("actuator pin for lane %r: %s" % (lane, e)) from None
        Actuator.__init__(self, list(pins), *timing, log=log)

    def _on(self, lane):
        self.outputs[lane].on()

    def _off(self, lane):
        self.outputs[lane].off()

    def _safe(self):
        for dev in self.outputs.values():
            dev.off()

    def _close(self):
        for dev in self.outputs.values():
            dev.off()
            dev.close()


class PlcActuator(Actuator):
    """Sends `SORT <seq> <lane> <in_ms>\n` when the box is decided; the PLC times it."""

    kind = "plc"

    def __init__(self, url: str, lanes: list, *timing, log=None):
        from protocol.transports import serialport

        self.link = serialport.open_link(url)
        self.lock = threading.Lock()
        Actuator.__init__(self, lanes, *timing, log=log)
        self._safe()

    def _schedule(self, lane, seq, on, off, now) -> None:
        with self.cond:
            held = self.held
        if held:  # a swap is a few milliseconds: the PLC still has the time left
            time.sleep(0.001)
        self._send("SORT %d %s %d\n" % (seq, lane, round(1000 * (on - self.clock()))))

    def _send(self, line: str) -> None:
        from protocol.session import LinkClosed

        try:
            with self.lock:
                self.link.write(line.encode("ascii"))
        except LinkClosed as e:
            self.log("PLC line: %s" % e)

    def _on(self, lane):
        pass

    def _off(self, lane):
        pass

    def _safe(self):
        self._send("SAFE\n")

    def _close(self):
        self.link.close()


def make_actuator(cfg: dict, lanes: list, log=None) -> Actuator:
    """The actuator of the [actuator] config section (validated by edge.line.config)."""
    distances = {lane: cfg["distance_m"].get(lane, cfg["camera_to_diverter_m"]) for lane in lanes}
    timing = (distances, cfg["belt_speed_mps"], cfg["pulse_ms"] / 1000.0, cfg["lead_ms"] / 1000.0)
    kind = cfg["kind"]
    if kind == "log":
        return LogActuator(lanes, *timing, log=log)
    if kind == "gpio":
        pins = cfg["pins"]
        missing = sorted(set(lanes) - set(pins))
        if missing:
            raise BinsortError("actuator.pins has no pin for lane(s) %s" % ", ".join(missing))
        return GpioActuator({lane: pins[lane] for lane in lanes}, *timing, log=log)
    return PlcActuator(cfg["url"], lanes, *timing, log=log)

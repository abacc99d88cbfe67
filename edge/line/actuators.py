"""What a decision does: pulse a diverter, tell a PLC, or only log it.

A box decided at the camera reaches the diverters `delay` seconds later (camera-to-diverter
distance / belt speed), so every actuator schedules its action. The safe state is every output
off and nothing pending: it holds at start, when no valid model is active, and on shutdown.
While a model is being swapped the actuator is held: nothing new starts until release().

- `gpio`: one gpiozero OutputDevice per lane, pulsed for `pulse_ms` when the box arrives.
- `plc`: one text line per box on a serial line to a PLC, which times the diverter itself
  (docs/format.md "PLC line protocol"): `SORT <seq> <lane> <delay_ms>`, and `SAFE` for the
  safe state.
- `log`: keeps the pulses in memory and prints them (dry runs and tests).
"""

import heapq
import threading
import time

from protocol.errors import BinsortError


class Actuator:
    """The scheduling part; subclasses say what on/off/safe mean."""

    kind = "base"

    def __init__(self, lanes: list, delay_s: float, pulse_s: float, log=None):
        self.lanes, self.delay_s, self.pulse_s = list(lanes), delay_s, pulse_s
        self.log = log or (lambda line: None)
        self.queue = []  # (time, order, action, lane)
        self.order = 0
        self.held = False
        self.cond = threading.Condition()
        self.stopping = False
        self.fired = {lane: 0 for lane in self.lanes}
        self.thread = threading.Thread(target=self._run, name="actuator", daemon=True)
        self.thread.start()

    def fire(self, lane: str, seq: int) -> None:
        if lane not in self.fired:
            raise BinsortError("no actuator output for lane %r" % lane)
        now = time.monotonic()
        with self.cond:
            self._push(now + self.delay_s, "on", lane)
            self._push(now + self.delay_s + self.pulse_s, "off", lane)
            self.fired[lane] += 1
            self.cond.notify()
        self.log("box %d -> lane %s in %.0f ms" % (seq, lane, self.delay_s * 1000))

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

    def _run(self) -> None:
        with self.cond:
            while not self.stopping:
                if not self.queue or (self.held and self.queue[0][2] == "on"):
                    self.cond.wait(0.05 if self.queue else None)
                    continue
                t, _, action, lane = self.queue[0]
                wait = t - time.monotonic()
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


class LogActuator(Actuator):
    kind = "log"

    def __init__(self, *args, **kwargs):
        self.events = []  # (monotonic time, "on"|"off"|"safe", lane)
        Actuator.__init__(self, *args, **kwargs)

    def _on(self, lane):
        self.events.append((time.monotonic(), "on", lane))

    def _off(self, lane):
        self.events.append((time.monotonic(), "off", lane))

    def _safe(self):
        self.events.append((time.monotonic(), "safe", None))


class GpioActuator(Actuator):
    kind = "gpio"

    def __init__(self, pins: dict, delay_s: float, pulse_s: float, log=None):
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
        Actuator.__init__(self, list(pins), delay_s, pulse_s, log)

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
    """Sends `SORT <seq> <lane> <delay_ms>\\n` when the box is decided; the PLC times it."""

    kind = "plc"

    def __init__(self, url: str, lanes: list, delay_s: float, pulse_s: float, log=None):
        from protocol.transports import serialport

        self.link = serialport.open_link(url)
        self.lock = threading.Lock()
        Actuator.__init__(self, lanes, delay_s, pulse_s, log)
        self._safe()

    def fire(self, lane: str, seq: int) -> None:
        if lane not in self.fired:
            raise BinsortError("no PLC lane %r" % lane)
        with self.cond:
            held = self.held
        if held:  # a swap is a few milliseconds: the PLC still has the whole delay
            time.sleep(0.001)
        self._send("SORT %d %s %d\n" % (seq, lane, round(self.delay_s * 1000)))
        self.fired[lane] += 1

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
    delay = cfg["camera_to_diverter_m"] / cfg["belt_speed_mps"]
    pulse = cfg["pulse_ms"] / 1000.0
    kind = cfg["kind"]
    if kind == "log":
        return LogActuator(lanes, delay, pulse, log)
    if kind == "gpio":
        pins = cfg["pins"]
        missing = sorted(set(lanes) - set(pins))
        if missing:
            raise BinsortError("actuator.pins has no pin for lane(s) %s" % ", ".join(missing))
        return GpioActuator({lane: pins[lane] for lane in lanes}, delay, pulse, log)
    return PlcActuator(cfg["url"], lanes, delay, pulse, log)

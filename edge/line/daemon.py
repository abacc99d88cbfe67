"""The sorting station's daemon: frames in, one decision per box, actuators out, models in.

    source.read() -> preprocess -> engine.classify -> BoxTracker -> LaneMap -> actuator.fire

Models come from the SlotStore (edge.install.store), written there by the receiver threads (TCP and
serial, edge.install.receiver) while the line runs. When the store's active slot changes, the new
model is loaded and self-tested in a helper thread beside the running one, then swapped in
between two frames with the actuator held; it stays on trial until `trial_boxes` boxes and
`trial_seconds` have passed without an error, and is then confirmed. A failed self-test, an
exception while it runs, or a death of the process during its trial (crash, power loss,
watchdog) rolls back to the previous slot; a clean stop or a fault outside the model pauses the
trial. Saving counters and captures is work the line can do without: its errors are counted.
With no valid model the actuator stays in its safe state and frames are skipped. A failing
source is retried with backoff and shown in the status.
"""

import collections
import contextlib
import os
import signal
import socket
import threading
import time

import numpy as np

from edge.engine.base import softmax
from edge.imaging.preprocess import preprocess
from edge.install.store import SlotStore, file_sha256
from edge.line.actuators import make_actuator
from edge.line.decide import BoxTracker, LaneMap
from edge.line.notify import Watchdog, notify
from edge.line.pixel_eye import PixelEye
from edge.line.sources import check_url, open_source
from edge.line.status import Counters, StatusServer
from protocol.errors import BinsortError, FormatError, bounded

LOG_KEEP = 500  # daemon log lines kept for GET /log.json
IO_ERROR_LOG_S = 60.0  # one log line a minute per kind of non-essential error
FRAME_PNG_S = 0.5  # the page's live view is encoded at most this often
RECEIVER_STALL_S = 30.0  # a receiver loop that has not gone round for this long is wedged
# a decision held back for the pixel eye goes out at the latest this long before the nearest
# diverter's pulse would have to start: time for the next frame's inference and the actuator
HOLD_MARGIN_S = 0.1


class LoadedModel:
    def __init__(self, engine, slot: str, record: dict):
        self.engine, self.slot, self.record = engine, slot, record
        self.labels = engine.model.labels
        self.input_shape = engine.model.input_shape


class StaleSlot(Exception):
    """A slot changed (an install) while its model was being loaded."""


class Daemon:
    def __init__(self, cfg: dict, log=None, record_truth: bool = False):
        from edge.line.gpio import mock_pin, photo_eye, use_factory

        self.cfg = cfg
        self.recent_log = collections.deque(maxlen=LOG_KEEP)  # what GET /log.json gives
        self.log = self._keeping(log or (lambda line: None))
        self.store = SlotStore(cfg["model"]["store"])
        self.store.on_refusal = lambda line: self._event("refused: " + line)
        self.counters = Counters(
            cfg["status"]["state_dir"] or os.path.join(self.store.root, "daemon")
        )
        self.stop_event = threading.Event()
        self.signalled = None  # set by the signal handler, turned into stop_event by the loop
        self.decisions = collections.deque(maxlen=5000)
        self.events = collections.deque(maxlen=200)  # installs, swaps, rollbacks
        lanes_cfg = cfg["lanes"]
        self.lanes = LaneMap(lanes_cfg["map"], lanes_cfg["reject"], cfg["decide"]["min_confidence"])
        check_url(cfg["source"]["url"])  # a bad scheme or value fails before a device is opened
        use_factory(cfg["gpio"]["pin_factory"] if cfg["gpio"] else None)
        self.eye = None
        eye_pin = None
        if cfg["photo_eye"]:
            self.eye = photo_eye(cfg["photo_eye"]["pin"], cfg["photo_eye"]["active_low"])
            if cfg["gpio"] and cfg["gpio"]["pin_factory"] == "mock":
                eye_pin = mock_pin(cfg["photo_eye"]["pin"])
        self.source_kwargs = {"eye_pin": eye_pin}
        self.actuator = make_actuator(cfg["actuator"], self.lanes.all_lanes(), self.log)
        self.actuator.safe()
        why = self.store.recover()
        if why:
            self._event("rollback: " + why)
        self.model = None
        self.trial = None  # {"boxes", "since"} while the active model is on trial
        self._load_at_start()
        pixel_eye, hold_s = None, 0.0
        if cfg["decide"]["timing"] == "image" and not cfg["photo_eye"]:
            pixel_eye = PixelEye(cfg["decide"]["belt_axis"])
            # a decision may wait for the eye until the nearest diverter's pulse is near
            travel = min(self.actuator.travel_s.values(), default=0.0)
            hold_s = travel - self.actuator.lead_s - HOLD_MARGIN_S
        self.tracker = BoxTracker(
            self.model.labels if self.model else [],
            enter=cfg["decide"]["enter_frames"],
            leave=cfg["decide"]["leave_frames"],
            pixel_eye=pixel_eye,
            hold_s=hold_s,
        )
        self.source = None  # opened by the frame loop, after the status page and receivers
        self.source_error = None
        self.watchdog = Watchdog()
        self.pending = None  # (thread, result dict, slot) of a model being loaded
        self.receiver_health = None  # the TCP receiver's session counts, once it runs
        self.receiver_beat = None  # when the TCP receiver's accept loop last went round
        self.services = []  # receiver threads; one that ends stops the daemon (systemd restarts)
        self.fault = None  # why the loop ended early: a receiver gone, or a fault outside the model
        self.io_errors = {}  # what -> {"count", "last", "logged_at"}: trouble the line runs through
        self.store_mtime = self._store_mtime()
        self.state = "starting"
        self.servers, self.links = [], []
        self.frames_seen = 0
        self.last_input = None  # (model input, scores, labels) of the latest frame, for the page
        self.png_cache = None  # (when, PNG bytes) of the page's live view
        self.minute = collections.Counter()  # lanes of the boxes since the last summary
        self.station = cfg["status"]["station"] or socket.gethostname()
        self.swaps = []  # frame numbers at which a model was swapped in
        self.truths = [] if record_truth else None  # what the simulator knew of each frame
        self.fire = True  # `binsort-edge capture` watches the line without sorting
        self.capture = self.box_frames = None
        self.recalibration = None  # the last scheduled recalibration ([recalibrate])
        cap = cfg.get("capture")
        if cap:
            from edge.line.capture import BoxFrames, CaptureRing

            self.capture = CaptureRing(
                cap["dir"] or os.path.join(self.store.root, "captures"),
                cap["max_mb"],
                cap["keep"],
                cap["doubt_below"],
                cap["full_frame"],
                cap["min_free_mb"],
                self._event,
            )
            self.box_frames = BoxFrames()

    # -- models -------------------------------------------------------------------------------

    def _store_mtime(self):
        try:
            return os.stat(os.path.join(self.store.root, "store.json")).st_mtime_ns
        except OSError:
            return None

    def _load(self, slot: str) -> LoadedModel:
        """Load the model in `slot`, checked against the SHA-256 the store recorded for it.
        StaleSlot when an install changed the slot while it was being read (nothing is wrong
        with any model: the store is read again); FormatError when the model is damaged."""
        from edge.engine import load_engine

        record = self.store.state()["slots"].get(slot)
        path = self.store.model_path(slot)
        if record is None or path is None:
            raise StaleSlot(slot)
        try:
            engine = load_engine(path)
            digest = file_sha256(path)
        except (FormatError, OSError) as e:
            if self.store.state()["slots"].get(slot) != record:
                raise StaleSlot(slot) from None
            raise FormatError(str(e)) from None
        if digest != record["sha256"]:
            if self.store.state()["slots"].get(slot) != record:
                raise StaleSlot(slot)  # replaced while it was read
            raise FormatError(
                "slot %s: the model file no longer matches its recorded SHA-256" % slot
            )
        loaded = LoadedModel(engine, slot, record)
        self.lanes.check_labels(loaded.labels)
        return loaded

    def _load_at_start(self) -> None:
        """The active model, or the previous one if it does not load; labels that do not
        match the lane map are a configuration error (nothing would sort right)."""
        for _ in range(2):
            slot, record = self.store.active()
            if slot is None:
                self._event("no model in the store: actuator held safe until one is installed")
                return
            try:
                self.model = self._load(slot)
            except StaleSlot:
                continue  # an install is changing the store: read it again
            except FormatError as e:
                self._event("rollback: slot %s does not load: %s" % (slot, e))
                self.store.rollback("does not load: %s" % e)
                continue
            if self.store.trial():
                self._begin_trial()
            return

    def _begin_trial(self) -> None:
        self.store.begin_trial()
        self.trial = {"boxes": 0, "since": time.monotonic()}

    def _check_store(self) -> None:
        """Start loading the model the store now names, if it changed (a new install). A store
        that cannot be read just now leaves the running model running; it is read again."""
        mtime = self._store_mtime()
        if mtime == self.store_mtime or self.pending is not None:
            return
        try:
            slot, record = self.store.active()
        except (BinsortError, OSError) as e:
            self._io_error("store", e)
            return
        self.store_mtime = mtime
        current = self.model.record if self.model else None
        if slot is None or (
            current
            and record
            and current.get("sha256") == record.get("sha256")
            and self.model.slot == slot
        ):
            return
        result = {}

        def load():
            try:
                result["model"] = self._load(slot)
            except StaleSlot:
                result["stale"] = True
            except BinsortError as e:
                result["error"] = str(e)
            except Exception as e:  # noqa: BLE001 (not the model's fault: try again, no rollback)
                result["stale"] = True
                self._event("loading slot %s: %s: %s" % (slot, type(e).__name__, e))

        thread = threading.Thread(target=load, name="model-load", daemon=True)
        thread.start()
        self.pending = (thread, result, slot)

    def _maybe_swap(self) -> None:
        if self.pending is None or self.pending[0].is_alive():
            return
        _, result, slot = self.pending
        self.pending = None
        if result.get("stale"):
            self.store_mtime = None  # read the store again on the next check
            return
        if "error" in result:
            self._event(
                "rollback: the model in slot %s failed to load: %s" % (slot, result["error"])
            )
            self.store.rollback("failed to load: %s" % result["error"])
            self.store_mtime = None  # reload whatever is active now
            return
        new = result["model"]
        self.actuator.hold()
        old, self.model = self.model, new
        self.tracker.relabel(new.labels)
        self.actuator.release()
        rec = new.record
        self.swaps.append(self.frames_seen)
        stage = new.engine.stage
        self._event(
            "swapped in %s v%d (%s%s, slot %s, %d bytes) before frame %d"
            % (
                rec["model_id"],
                rec["version"],
                rec["kind"],
                " stage %d of %d" % stage if stage else "",
                new.slot,
                rec["bytes"],
                self.frames_seen,
            )
        )
        if old is None:
            self._event("a valid model is active: actuator released")
        if self.store.trial():
            self._begin_trial()

    def _trial_step(self, decided: bool) -> None:
        if self.trial is None:
            return
        self.trial["boxes"] += int(decided)
        m = self.cfg["model"]
        if (
            self.trial["boxes"] >= m["trial_boxes"]
            and time.monotonic() - self.trial["since"] >= m["trial_seconds"]
        ):
            why = "%d boxes in %.0f s without an error" % (
                self.trial["boxes"],
                time.monotonic() - self.trial["since"],
            )
            if not self._nonessential("store", self.store.commit_trial, why):
                return  # the store cannot be written just now: the trial goes on, tried again
            self._event(
                "confirmed %s v%d after its trial"
                % (self.model.record["model_id"], self.model.record["version"])
            )
            self.trial = None

    def _fail_running(self, error: Exception) -> None:
        """The running model raised: roll back if it was on trial, else stop using it."""
        self._event("model error: %s" % error)
        self.actuator.safe()
        self.store.rollback("raised while running: %s" % error)
        self.model, self.trial = None, None
        self.tracker.abandon()
        self.store_mtime = None
        slot, _ = self.store.active()
        if slot is not None:
            try:
                self.model = self._load(slot)
                self._event("back on slot %s" % slot)
            except BinsortError as e:
                self._event("previous model does not load either: %s" % e)

    # -- the frame loop -----------------------------------------------------------------------

    def _keeping(self, log):
        """`log`, also keeping each line (with its time) for the status endpoint's /log.json:
        `binsort fleet logs` reads a device's log without a shell on it."""

        lock = self.log_lock = threading.Lock()

        def keep(line):
            with lock:  # the status thread copies the deque: never while it changes
                self.recent_log.append({"t": round(time.time(), 3), "line": str(line)})
            log(line)

        return keep

    def log_tail(self, lines: int) -> dict:
        """The daemon's last `lines` log lines and the store's (installs, refusals, rollbacks)."""
        store = []
        with contextlib.suppress(OSError, BinsortError):
            store = self.store.tail_log(lines)
        with self.log_lock:
            recent = list(self.recent_log)
        return {"station": self.station, "daemon": recent[-lines:] if lines else [], "store": store}

    def _event(self, line: str) -> None:
        with self.log_lock:  # status() copies it from another thread
            self.events.append({"t": round(time.time(), 3), "event": line})
        with contextlib.suppress(Exception):  # a log that cannot be written is no reason to stop
            self.log(line)

    def _nonessential(self, what: str, fn, *args) -> bool:
        """Run fn(*args), work the line does not need to sort (saving counters, keeping
        captures, writing the store's trial record): an error in it is counted, logged at most
        once a minute per kind, and the line goes on. True when fn ran without an error."""
        try:
            fn(*args)
            return True
        except Exception as e:  # noqa: BLE001 (none of it may stop the line)
            self._io_error(what, e)
            return False

    def _io_error(self, what: str, error: Exception) -> None:
        rec = self.io_errors.setdefault(what, {"count": 0, "last": None, "logged_at": None})
        rec["count"] += 1
        rec["last"] = bounded(error)
        now = time.monotonic()
        if rec["logged_at"] is None or now - rec["logged_at"] >= IO_ERROR_LOG_S:
            rec["logged_at"] = now
            self._event("%s: %s (%d so far; the line goes on)" % (what, rec["last"], rec["count"]))

    def _open_source(self) -> None:
        self.source = open_source(self.cfg["source"]["url"], **self.source_kwargs)
        if getattr(self.source, "virtual", False):  # the simulator's clock, not the wall's
            self.actuator.drive(self.source.now)

    def _read_frame(self):
        """The next frame, with the photo-eye as it was when the frame was taken; on a source
        failure, back off (the actuator safe, the watchdog fed, the status saying so) and
        retry. None when the source has no more frames or the daemon is stopping."""
        backoff = 0.1
        while not self._stopping():
            try:
                if self.source is None:
                    self._open_source()
                frame = self.source.read()
                if frame is not None:
                    frame.eye = self.eye.is_pressed if self.eye is not None else None
                if self.source_error:
                    self._event("source recovered")
                    notify("STATUS=sorting")
                self.source_error = None
                return frame
            except BinsortError as e:
                self.counters.source_error()
                if self.source_error is None:
                    self._event("source failed: %s (retrying)" % e)
                    notify("STATUS=source error: %s" % bounded(e, 200))
                self.source_error = str(e)
                self.actuator.safe()
                self.tracker.abandon()
                if self.source is not None:
                    self.source.close()
                    self.source = None
                self._rest(backoff)
                backoff = min(backoff * 2, self.cfg["source"]["retry_max_s"])
        return None

    def _rest(self, seconds: float) -> None:
        """Wait, feeding the watchdog: a source being retried is not a stalled daemon. A
        receiver lost meanwhile stops the daemon as it would in the frame loop."""
        end = time.monotonic() + seconds
        while not self._stopping():
            self.watchdog.ping()
            if self._services_down():
                self._service_lost()
                self.stop_event.set()
                return
            self._check_store()
            self._maybe_swap()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.stop_event.wait(min(left, 0.5))

    def step(self, frame) -> None:
        """One frame through the model and the tracker."""
        self._check_store()
        self._maybe_swap()
        if self.model is None:
            return
        t0 = time.perf_counter()
        h, w = self.model.input_shape
        try:
            x = preprocess(frame.image, h, w, frame.limited_range)
            _, _, scores = self.model.engine.classify(x[None])
        except (BinsortError, ValueError, MemoryError) as e:
            self._fail_running(e)
            return
        self.last_input = (x, scores[0], self.model.labels)  # the page reads it, if asked
        d = self.tracker.push(frame.index, frame.t, scores[0], frame.eye, frame.image)
        self.counters.frame(time.perf_counter() - t0)
        if d is not None:
            self.lanes.route(d)
            if self.fire:
                self.actuator.fire(d.lane, d.seq, d.t)
            self.counters.box(d.lane, d.label, d.why is not None)
            rec = d.as_dict()
            rec["model_version"] = self.model.record["version"]
            rec["t"] = round(d.t, 4)
            rec["at"] = round(time.time(), 3)  # wall clock, for the page's boxes a minute
            self.minute[d.lane] += 1
            self.decisions.append(rec)
            if self.capture is not None:
                self._nonessential(
                    "capture",
                    self.capture.offer,
                    d,
                    self.box_frames.middle(d.first, d.last),
                    dict(self.model.record, labels=self.model.labels),
                )
        if self.capture is not None:
            self._nonessential("capture", self._keep_frame, frame, x, scores[0])
        self._trial_step(d is not None)

    def _keep_frame(self, frame, x, scores) -> None:
        """Hold this frame for a capture while the tracker counts it as part of a box."""
        frames = self.tracker.frames
        if frames and frames[-1][0] == frame.index:
            full = frame.image.copy() if self.capture.full_frame else None
            self.box_frames.add(frame.index, (x, scores, full))
        elif not frames and self.tracker.held is None:  # a held box still needs its frames
            self.box_frames.clear()

    def run(self, max_frames=None) -> None:
        """The loop, until SIGTERM/stop(), the source's end, or max_frames. However it ends,
        short of the process being killed, a model on trial keeps its trial: only an error
        from the model itself (or a restart the daemon could not see coming: a crash of the
        process, a power cut, the watchdog) rolls it back. A fault anywhere else ends the loop
        with `fault` set, for systemd to start the daemon again."""
        watchdog = self.watchdog
        self.state = "running"
        notify("READY=1")
        notify("STATUS=sorting" if self.model else "STATUS=waiting for a model")
        last_save = last_summary = time.monotonic()
        frames = 0
        try:
            while not self._stopping() and (max_frames is None or frames < max_frames):
                if self.model is None:  # nothing to sort with: the camera rests, outputs safe
                    if self._services_down():
                        self._service_lost()
                        break
                    self._check_store()
                    self._maybe_swap()
                    watchdog.ping()
                    self.stop_event.wait(0.05)
                    continue
                frame = self._read_frame()
                if frame is None:
                    break
                if self.truths is not None:
                    self.truths.append(frame.truth)
                self.step(frame)
                if self.actuator.manual:
                    self.actuator.advance()
                frames += 1
                self.frames_seen += 1
                watchdog.ping()  # only from here: a stalled loop gets restarted
                if frames % 50 == 0 and self._services_down():
                    self._service_lost()
                    break
                if time.monotonic() - last_save >= self.cfg["status"]["save_every_s"]:
                    self._nonessential("counters", self.counters.save)
                    last_save = time.monotonic()
                if time.monotonic() - last_summary >= self.cfg["status"]["summary_every_s"]:
                    self._summary(time.monotonic() - last_summary)
                    last_summary = time.monotonic()
        except Exception as e:  # noqa: BLE001 (a fault outside the model: restart, no rollback)
            self.fault = bounded(e)
            self._event("daemon fault: %s: the daemon ends, to be started again" % self.fault)
        finally:
            self.state = "stopping"
            self.stop_event.set()  # the receiver threads end too
            notify("STOPPING=1")
            if self.actuator.manual and self.fault is None:
                self.actuator.flush()  # a virtual run's boxes still reach their diverters
            self._nonessential("store", self.store.pause_trial)
            self.shutdown()

    def _summary(self, seconds: float) -> None:
        """One log line and one systemd STATUS= for the boxes of the last period, instead of
        a line per box (an SD card's journal for months)."""
        boxes = sum(self.minute.values())
        lanes = ", ".join("%s %d" % kv for kv in sorted(self.minute.items()))
        m = self.model
        model = "%s v%d" % (m.record["model_id"], m.record["version"]) if m else "no model"
        late = self.actuator.late
        line = "last %.0f s: %d boxes%s, %d late in all; %s" % (
            seconds,
            boxes,
            " (%s)" % lanes if lanes else "",
            late,
            model,
        )
        with contextlib.suppress(Exception):
            self.log(line)
        notify("STATUS=sorting, %.0f boxes/min, %s" % (60 * boxes / max(seconds, 1e-9), model))
        self.minute.clear()

    # -- around the loop ----------------------------------------------------------------------

    def start_services(self) -> None:
        """The status endpoint and the receivers (the same store, in threads)."""
        page = StatusServer(
            self.cfg["status"]["listen"], self.status, self.frame_png, self.log_tail
        )
        self.servers.append(page)
        self.log("status page on port %d (%s)" % (page.port, self.cfg["status"]["listen"]))
        rx = self.cfg["receiver"]
        if rx and rx["listen"]:
            from protocol.transports import tcp

            listener = tcp.listen(rx["listen"])
            self.servers.append(listener)
            self.receiver_port = listener.port
            self.log("receiving models on port %d (%s)" % (listener.port, rx["listen"]))
            self._thread("the TCP receiver", self._serve_tcp, listener)
        if rx and rx["serial"]:
            from protocol.transports import serialport

            link = serialport.open_link(rx["serial"])
            self.links.append(link)
            self._thread("the serial receiver", self._serve_serial, link)

        if self.cfg["recalibrate"]:
            t = threading.Thread(target=self._recalibrate_every, daemon=True, name="recalibrate")
            t.start()

    def _recalibrate_every(self) -> None:
        """[recalibrate]: every `every_h` hours re-estimate the active model's thresholds from
        the capture ring (tier 0) and install the result, which the loop then swaps in and
        trials like any model. Skipped while a model is on trial; errors are logged, never
        fatal. The thread runs at the lowest CPU priority: the line comes first."""
        with contextlib.suppress(AttributeError, OSError):  # Linux: nice this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        every = self.cfg["recalibrate"]["every_h"] * 3600
        while not self.stop_event.wait(every):
            self.recalibrate_now()

    def recalibrate_now(self) -> bool:
        """One scheduled recalibration (the [recalibrate] thread calls this): whether a
        recalibrated model was installed. Skipped while a model is on trial."""
        from edge.install.recalibration import recalibrate_store

        if self.store.trial() is not None:
            self._event("recalibration skipped: a model is on trial")
            return False
        try:
            report = recalibrate_store(
                self.store, self.capture.root, self.cfg["recalibrate"]["frames"]
            )
        except BinsortError as e:
            self.recalibration = {"at": int(time.time()), "error": str(e)}
            self._event("recalibration failed: %s" % e)
            return False
        self.recalibration = {
            "at": int(time.time()),
            "frames": report["frames"],
            "decisions_changed": report["decisions_changed"],
        }
        self._event(
            "recalibrated on %d frames: %.1f%% of their decisions change; on trial in slot %s"
            % (report["frames"], 100 * report["decisions_changed"], report["slot"])
        )
        return True

    def _thread(self, name: str, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=name)
        t.start()
        self.services.append(t)

    def _services_down(self) -> list:
        """The names of receiver threads that have ended although the daemon runs, or whose
        loop has not gone round for RECEIVER_STALL_S (wedged: as good as ended)."""
        if self.stop_event.is_set():
            return []
        down = [t.name for t in self.services if not t.is_alive()]
        beat = self.receiver_beat
        if beat is not None and time.monotonic() - beat > RECEIVER_STALL_S:
            down.append("the TCP receiver (wedged)")
        return down

    def _service_lost(self) -> None:
        """A receiver thread ended: without it no model can be shipped, so the daemon ends
        with an error and systemd starts it again, receivers and all. That is not the model's
        fault: a model on trial keeps its trial (it is run again after the restart), it is
        not rolled back."""
        down = self._services_down()
        self._event("%s stopped: the daemon ends so that it is started again" % ", ".join(down))
        self.fault = "%s stopped" % ", ".join(down)

    def _serve_tcp(self, listener) -> None:
        from edge.install.receiver import serve_listener

        min_acc = self.cfg["receiver"]["pranc_min_accuracy"]
        self.receiver_health = {"active": 0, "served": 0, "refused_busy": 0, "evicted": 0}
        try:
            serve_listener(
                listener,
                self.store,
                min_acc,
                self._event,
                self.stop_event.is_set,
                on_health=lambda h: setattr(self, "receiver_health", h),
                on_beat=lambda: setattr(self, "receiver_beat", time.monotonic()),
                first_frame=self.cfg["receiver"]["first_frame_s"],
            )
        finally:
            self.receiver_beat = None  # ended, not wedged: the thread's end says so
            if not self.stop_event.is_set():
                self.receiver_health = dict(self.receiver_health, stopped=True)
                self._event("receiver: stopped")

    def _serve_serial(self, link) -> None:
        from edge.install.receiver import serve_link

        try:
            serve_link(
                link, self.store, self.cfg["receiver"]["pranc_min_accuracy"], self._event, True
            )
        except BinsortError as e:
            self._event("serial receiver stopped: %s" % e)

    def stop(self) -> None:
        """Stop the daemon from another thread (tests, the line demo)."""
        self.stop_event.set()

    def on_signal(self, signum, _frame) -> None:
        """SIGTERM/SIGINT. Only a plain attribute is set here: the handler runs in the main
        thread between two bytecodes, possibly inside stop_event.wait() while that thread
        holds the Event's lock, and Event.set() would then wait for the lock forever. The
        loop's own checks (every frame, every half second while resting) stop it."""
        self.signalled = signum

    def _stopping(self) -> bool:
        """Whether the daemon is stopping; a signal received meanwhile is acted on here,
        outside the handler, so the receiver threads see stop_event too."""
        if self.signalled is not None and not self.stop_event.is_set():
            self.stop_event.set()
        return self.stop_event.is_set()

    def shutdown(self) -> None:
        self.actuator.close()  # safe state first
        if self.eye is not None:
            self.eye.close()
        for s in self.servers:
            s.close()
        for link in self.links:
            link.close()
        if self.source is not None:
            self.source.close()
        if self.capture is not None:
            self._nonessential("capture", self.capture.close)
        self._nonessential("counters", self.counters.save)

    def status(self) -> dict:
        out = self.counters.snapshot()
        m = self.model
        out["station"] = self.station
        out["state"] = (
            self.state
            if m and not self.source_error
            else "source error"
            if self.source_error
            else "no model"
        )
        out["model"] = (
            {k: m.record[k] for k in ("model_id", "version", "kind", "bytes", "size", "complete")}
            | {"slot": m.slot, "trial": self.trial is not None}
            | {"stage": list(m.engine.stage) if m.engine.stage else None}
            if m
            else None
        )
        out["engine"] = m.engine.describe() if m else None
        out["source"] = {"url": self.cfg["source"]["url"], "last_error": self.source_error}
        if getattr(self.source, "skipped", 0):  # unreadable images a folder source passed over
            out["source"].update(skipped=self.source.skipped, last_skipped=self.source.last_skipped)
        out["latency_ms"] = self.counters.latency_ms()
        out["lanes"] = {lane: out["lanes"].get(lane, 0) for lane in self.lanes.all_lanes()}
        now = time.time()
        decisions = list(self.decisions)  # one copy: the frame loop appends meanwhile
        out["boxes_per_minute"] = sum(1 for d in decisions if d["at"] >= now - 60)
        out["reject_rate"] = round(out["rejects"] / out["boxes"], 4) if out["boxes"] else None
        out["reject_alarm"] = self.cfg["status"]["reject_alarm"]
        out["alarm"] = bool(out["boxes"] and out["reject_rate"] > out["reject_alarm"])
        out["actuator"] = self.actuator.summary()
        tr = self.tracker
        out["timing"] = {
            "from": "eye" if self.cfg["photo_eye"] else self.cfg["decide"]["timing"],
            "by_image": tr.image_timed,
            "by_model": tr.model_timed,
            "held": tr.held_count,
        }
        with self.log_lock:
            out["events"] = list(self.events)[-20:]
        out["last_decisions"] = decisions[-10:]
        if self.last_input is not None:
            _, scores, labels = self.last_input
            probs = softmax(np.asarray(scores, dtype=np.float64))
            best = int(np.argmax(probs))
            out["frame"] = {"label": labels[best], "confidence": round(float(probs[best]), 4)}
        if self.capture is not None:
            out["capture"] = self.capture.summary()
        if m and m.record.get("recalibrated_from"):
            out["model"]["recalibrated"] = m.record.get("recalibration")
        if self.recalibration is not None:
            out["recalibration"] = self.recalibration
        if self.receiver_health is not None:
            out["receiver"] = dict(self.receiver_health)
            if self.receiver_beat is not None:
                out["receiver"]["loop_age_s"] = round(time.monotonic() - self.receiver_beat, 1)
        out["io_errors"] = {
            what: {"count": e["count"], "last": e["last"]} for what, e in self.io_errors.items()
        }
        if self.fault:
            out["fault"] = self.fault
        try:
            out["store"] = self.store.slots_summary()
        except (OSError, BinsortError) as e:
            out["store"] = {"error": str(e)}
        return out

    def frame_png(self):
        """The latest model input as a PNG, or None before the first frame. Encoded at most
        every FRAME_PNG_S, whoever asks how often: page views must not take a Pi Zero's one
        core from the frame loop."""
        last = self.last_input
        if last is None:
            return None
        cached = self.png_cache
        if cached is not None and time.monotonic() - cached[0] < FRAME_PNG_S:
            return cached[1]
        from edge.line.status import png

        self.png_cache = (time.monotonic(), png(last[0]))
        return self.png_cache[1]


def run_daemon(cfg: dict, log=None, max_frames=None) -> Daemon:
    """Start services, handle SIGTERM/SIGINT, run the loop; returns the daemon when it ends."""
    daemon = Daemon(cfg, log)
    daemon.start_services()
    _until_signalled(daemon, max_frames)
    return daemon


def watch_and_capture(cfg: dict, log=None, max_frames=None) -> Daemon:
    """`binsort-edge capture`: the daemon's camera, model and box tracking, and its capture
    ring, with no actuator, no receiver and no status server: a line watched, not sorted."""
    cfg = dict(cfg, receiver=None)
    cfg["actuator"] = dict(cfg["actuator"], kind="log")
    daemon = Daemon(cfg, log)
    daemon.fire = False
    if daemon.model is None:
        daemon.shutdown()
        raise BinsortError(
            "capture needs a model in the store %s: it decides where one box ends and the "
            "next begins, and labels each capture" % daemon.store.root
        )
    _until_signalled(daemon, max_frames)
    return daemon


def _until_signalled(daemon: Daemon, max_frames) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, daemon.on_signal)
        signal.signal(signal.SIGINT, daemon.on_signal)
    daemon.run(max_frames)

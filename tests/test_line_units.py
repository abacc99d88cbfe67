"""The line's pieces on their own, without a daemon run: box tracking, lanes, the actuator's
schedule and the counters."""

import json
import os
import time

import numpy as np
import pytest

from edge.line.actuators import LogActuator
from edge.line.decide import BoxTracker, Decision, LaneMap
from edge.line.status import LATENCY_WINDOW, Counters
from protocol.errors import BinsortError

LABELS = ["F06", "K11", "empty"]
BOX = {"F06": [9.0, 0.0, 0.0], "K11": [0.0, 9.0, 0.0], "empty": [0.0, 0.0, 9.0]}


def feed(tracker, sequence, eye=None):
    """Scores for a sequence of labels; the decisions it produced, by frame index."""
    out = {}
    for i, label in enumerate(sequence):
        d = tracker.push(i, i * 0.1, np.array(BOX[label]), None if eye is None else eye[i])
        if d is not None:
            out[i] = d
    return out


def test_a_box_needs_enter_frames_and_ends_after_leave_empty_frames():
    tracker = BoxTracker(LABELS, enter=2, leave=3)
    seq = ["empty", "F06", "empty"] + ["K11"] * 4 + ["empty"] * 3 + ["F06"] * 2 + ["empty"] * 3
    decisions = feed(tracker, seq)
    # the lone F06 frame is no box; K11 ends at the third empty frame (index 9)
    assert sorted(decisions) == [9, 14]
    k11, f06 = decisions[9], decisions[14]
    assert (k11.label, k11.frames, k11.first, k11.last, k11.seq) == ("K11", 4, 3, 6, 0)
    assert (f06.label, f06.frames, f06.seq) == ("F06", 2, 1)
    assert k11.t == pytest.approx((0.3 + 0.6) / 2)  # the middle of the box's frames
    assert k11.confidence > 0.99 and len(k11.probs) == 3


def test_an_empty_frame_inside_a_box_does_not_split_it():
    tracker = BoxTracker(LABELS, enter=2, leave=2)
    decisions = feed(tracker, ["F06", "F06", "empty", "F06", "F06"] + ["empty"] * 2)
    assert list(decisions) == [6] and decisions[6].frames == 4


def test_the_decision_averages_every_frame_and_never_picks_empty():
    tracker = BoxTracker(LABELS, enter=1, leave=1)
    tracker.push(0, 0.0, np.array([2.0, 0.0, 5.0]), eye=True)  # mostly empty-looking
    tracker.push(1, 0.1, np.array([2.0, 1.0, 5.0]), eye=True)
    d = tracker.push(2, 0.2, np.array([0.0, 0.0, 9.0]), eye=False)
    assert d.label == "F06" and d.frames == 2 and d.confidence < 0.5


def test_the_photo_eye_bounds_the_box_whatever_the_model_says():
    tracker = BoxTracker(LABELS, enter=1, leave=1)
    seq = ["empty", "K11", "empty", "K11", "empty", "empty"]
    eye = [False, True, True, True, False, False]
    decisions = feed(tracker, seq, eye)
    assert list(decisions) == [4] and decisions[4].frames == 3 and decisions[4].label == "K11"
    assert decisions[4].t == pytest.approx(0.2)  # the middle of its first and last frames


def test_a_flickering_photo_eye_neither_splits_a_box_nor_makes_one():
    """Debounced by the tracker's counts: `enter` blocked frames start a box, `leave` clear
    ones end it. One clear frame inside a box, or one blocked frame on the belt, is a flicker."""
    tracker = BoxTracker(LABELS, enter=2, leave=3)
    eye = [False, True, False, False, False]  # a one-frame flicker: no box
    eye += [True, True, True, False, True, True, True]  # a box, with a one-frame gap in it
    eye += [False, False, False, False]
    seq = ["K11" if e else "empty" for e in eye]
    decisions = feed(tracker, seq, eye)
    assert list(decisions) == [14]
    box = decisions[14]
    assert (box.first, box.last, box.frames) == (5, 11, 6)  # the clear frame is not counted
    assert box.t == pytest.approx((0.5 + 1.1) / 2)


def test_no_empty_class_and_no_eye_is_an_error_and_bad_hysteresis_too():
    with pytest.raises(BinsortError, match="empty"):
        BoxTracker(["F06", "K11"]).push(0, 0.0, np.array([1.0, 0.0]))
    with pytest.raises(BinsortError, match="at least 1"):
        BoxTracker(LABELS, enter=0)


def test_a_new_model_with_other_labels_drops_the_box_in_progress():
    tracker = BoxTracker(LABELS, enter=1, leave=1)
    tracker.push(0, 0.0, np.array(BOX["F06"]))
    tracker.relabel(["K11", "F06", "empty"])
    assert tracker.frames == [] and tracker.empty == 2
    same = BoxTracker(LABELS, enter=1, leave=1)
    same.push(0, 0.0, np.array(BOX["F06"]))
    same.relabel(list(LABELS))
    assert len(same.frames) == 1


def decision(label, confidence):
    return Decision(0, label, confidence, 3, 0, 2, 0.1)


def test_lanes_route_by_label_and_reject_doubt_and_unknown_labels():
    lanes = LaneMap({"F06": "left", "K11": "right"}, "reject", 0.6)
    assert lanes.route(decision("F06", 0.9)).lane == "left"
    low = lanes.route(decision("K11", 0.59))
    assert (low.lane, low.why) == ("reject", "confidence 0.59 below 0.60")
    other = lanes.route(decision("S19", 0.99))
    assert (other.lane, other.why) == ("reject", "no lane for S19")
    assert lanes.all_lanes() == ["left", "reject", "right"]
    lanes.check_labels(["F06", "K11", "empty"])
    with pytest.raises(BinsortError, match="K11, which the model does not know"):
        LaneMap({"F06": "left", "K11": "right"}, "reject", 0.5).check_labels(["F06", "empty"])
    with pytest.raises(BinsortError):
        LaneMap({}, "", 0.5)
    with pytest.raises(BinsortError):
        LaneMap({}, "reject", 1.5)


def wait_for(cond, seconds=2.0):
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.005)
    return cond()


def actuator(lanes, distance=0.08, pulse=0.04, lead=0.0, speed=1.0):
    return LogActuator(lanes, {lane: distance for lane in lanes}, speed, pulse, lead)


def test_the_actuator_times_each_pulse_from_when_the_box_passed_the_camera():
    """on = t_ref + distance / speed - lead, whenever the decision comes; off = on + pulse."""
    act = actuator(["left", "right"], distance=0.16, speed=2.0, pulse=0.04, lead=0.01)
    try:
        t0 = time.monotonic()
        act.fire("left", 0, t0 - 0.03)  # the box passed the camera 30 ms before its decision
        t1 = time.monotonic()
        act.fire("right", 1, t1)
        assert wait_for(lambda: len(act.events) == 4)
        by = {(e[1], e[2]): e[0] for e in act.events}
        # never early (a loaded machine may be late; the schedule is absolute, not cumulative)
        assert by[("on", "left")] >= t0 - 0.03 + 0.08 - 0.01
        assert by[("on", "left")] < t0 + 0.08 - 0.01  # timed from t_ref, not from the decision
        assert by[("off", "left")] >= t0 - 0.03 + 0.08 + 0.03
        assert by[("on", "right")] >= t1 + 0.07 and by[("on", "left")] < by[("off", "left")]
        assert act.fired == {"left": 1, "right": 1}
        with pytest.raises(BinsortError, match="no actuator output"):
            act.fire("middle", 2, t1)
    finally:
        act.close()
    assert act.events[-1][1] == "safe"


def test_a_box_decided_after_it_reached_its_diverter_is_not_fired_and_is_counted():
    """A pulse then would hit whatever comes next; one whose start has passed but whose box
    has not yet arrived starts at once."""
    clock = {"t": 10.0}
    act = actuator(["left"], distance=0.5, speed=1.0, pulse=0.1, lead=0.05)
    act.drive(lambda: clock["t"])
    try:
        late = act.fire("left", 0, 9.4)  # reached the diverter at 9.9
        assert late["late"] and act.late == 1 and act.fired == {"left": 0}
        act.fire("left", 1, 9.53)  # arrives at 10.03: on was 9.98, starts now
        assert act.late_start == 1 and act.plan[-1]["start"] == 10.0
        act.fire("left", 2, 9.9)  # arrives at 10.4: on at 10.35
        act.advance()
        assert [e[1:] for e in act.events] == [("on", "left")]
        clock["t"] = 10.2
        act.advance()
        assert [e[1] for e in act.events] == ["on", "off"]
        act.flush()  # the rest of the run: every planned pulse, in order
        assert [(round(e[0], 2), e[1]) for e in act.events] == [
            (10.0, "on"),
            (10.2, "off"),
            (10.2, "on"),
            (10.2, "off"),
        ]
    finally:
        act.close()


def test_a_held_actuator_starts_nothing_new_until_released_and_safe_drops_the_queue():
    act = actuator(["left"], distance=0.5, pulse=0.02)
    try:
        act.hold()
        act.fire("left", 0, time.monotonic() - 0.45)
        time.sleep(0.1)
        assert not [e for e in act.events if e[1] == "on"]
        act.release()
        assert wait_for(lambda: [e[1] for e in act.events] == ["on", "off"])
        act.hold()
        act.fire("left", 1, time.monotonic() + 0.05)
        act.safe()
        act.release()
        time.sleep(0.1)
        assert [e[1] for e in act.events] == ["on", "off", "safe"]
    finally:
        act.close()


def test_counters_count_boxes_keep_a_latency_window_and_survive_a_restart(tmp_path):
    c = Counters(str(tmp_path))
    c.box("left", "F06", False)
    c.box("reject", "K11", True)
    for i in range(LATENCY_WINDOW + 10):
        c.frame(0.001 * (i % 100))
    c.source_error()
    snap = c.snapshot()
    assert snap["boxes"] == 2 and snap["rejects"] == 1 and snap["source_errors"] == 1
    assert snap["lanes"] == {"left": 1, "reject": 1} and snap["labels"] == {"F06": 1, "K11": 1}
    lat = c.latency_ms()
    assert lat["n"] == LATENCY_WINDOW and lat["max"] == 99.0 and 40 <= lat["p50"] <= 60
    c.save()
    again = Counters(str(tmp_path))
    assert again.data["restarts"] == 1 and again.data["boxes"] == 2
    (tmp_path / "counters.json").write_text("{damaged")
    assert Counters(str(tmp_path)).data["boxes"] == 0  # a damaged file does not stop the line
    assert json.loads(json.dumps(Counters(None).snapshot()))["boxes"] == 0


def test_idle_connections_cannot_starve_the_status_page():
    import socket
    import threading
    import urllib.request

    from edge.line.status import STATUS_CONNECTIONS, STATUS_TIMEOUT, StatusServer

    server = StatusServer("127.0.0.1:0", lambda: {"state": "running"})
    idle = []
    try:
        for _ in range(3 * STATUS_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.3)
        assert threading.active_count() < STATUS_CONNECTIONS + 10  # not a thread each
        end, got = time.monotonic() + 3 * STATUS_TIMEOUT, None
        while got is None and time.monotonic() < end:
            try:
                url = "http://127.0.0.1:%d/status.json" % server.port
                with urllib.request.urlopen(url, timeout=2) as r:
                    got = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert got == {"state": "running"}
    finally:
        for s in idle:
            s.close()
        server.close()


BASE_CONFIG = {
    "model": {"store": "/tmp/store"},
    "source": {"url": "sim:"},
    "lanes": {"reject": "reject", "map": {"F06": "left"}},
}


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("model", "trial_seconds", float("nan"), "finite number"),
        ("actuator", "camera_to_diverter_m", float("nan"), "finite number"),
        ("actuator", "belt_speed_mps", float("inf"), "finite number"),
        ("status", "listen", "127.0.0.1:99999", "port 0-65535"),
        ("receiver", "listen", "udp://0.0.0.0:7600", "listen: 'udp://0.0.0.0:7600' is not a tcp"),
        ("receiver", "listen", "0.0.0.0", "a TCP link is tcp://HOST:PORT"),
        ("receiver", "serial", "tcp://1.2.3.4:5", "is not a serial:// address"),
        ("actuator", "distance_m", {"middle": 0.4}, "middle is not a lane"),
        ("actuator", "distance_m", {"left": -1}, "metres from the camera"),
        ("actuator", "lead_ms", 200.0, "less than pulse_ms"),
        ("source", "url", "sim:?sped=8", "unknown parameter 'sped' \\(parameters: speed, gap"),
        ("source", "url", "folder:/x?fsp=2", "unknown parameter 'fsp' \\(parameters: fps, loop\\)"),
        # values, checked at start: a source that fails is retried for ever, as a camera is
        ("source", "url", "sim:?size=abc", "size='abc' is not a number"),
        ("source", "url", "sim:?size=100000", "size must be at most 1024"),
        ("source", "url", "sim:?fps=nan", "not a finite number"),
        ("source", "url", "picamera2:?size=64", "size must be WIDTHxHEIGHT"),
        ("source", "url", "picamera2:?hflip=2", "hflip must be 0 or 1"),
        ("source", "url", "folder:/nonexistent/frames", "no such file or folder"),
        # past what any timer takes (threading's waits overflow past about 9.2e9 s)
        ("actuator", "camera_to_diverter_m", 1e300, "camera_to_diverter_m must be at most"),
        ("actuator", "belt_speed_mps", 1e-300, "belt_speed_mps must be at least"),
        ("actuator", "pulse_ms", 1e12, "pulse_ms must be at most"),
        ("status", "save_every_s", 1e300, "save_every_s must be at most"),
        ("recalibrate", "every_h", 1e12, "every_h must be at most"),
        ("receiver", "pranc_min_accuracy", 2.0, "pranc_min_accuracy must be between 0 and 1"),
        ("receiver", "pranc_min_accuracy", -0.5, "pranc_min_accuracy must be between 0 and 1"),
    ],
)
def test_config_values_that_are_not_finite_or_in_range_are_refused(section, key, value, message):
    from edge.line.config import check_config
    from edge.line.sources import check_url

    raw = {k: dict(v) for k, v in BASE_CONFIG.items()}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(BinsortError, match=message):
        check_url(check_config(raw)["source"]["url"])  # what the daemon checks at start


def test_bare_addresses_are_taken_as_they_are():
    """`/dev/ttyUSB0` is a serial device and `127.0.0.1:7600` a TCP address; neither is cut
    short by a blind `serial://` or `tcp://` slice."""
    from protocol.transports import serialport, tcp

    assert serialport.parse("/dev/ttyNOPE") == ("/dev/ttyNOPE", 115200)
    assert serialport.parse("serial:///dev/ttyS0?baud=9600") == ("/dev/ttyS0", 9600)
    assert tcp.parse("127.0.0.1:17601") == ("127.0.0.1", 17601, {})
    assert tcp.parse("tcp://[::1]:7600") == ("::1", 7600, {})


def test_a_folder_source_reads_frames_as_training_and_eval_do(tmp_path):
    from PIL import Image

    from edge.line.sources import open_source

    # a 16-bit frame at mid grey, and a phone frame stored on its side
    Image.fromarray(np.full((6, 6), 32896, dtype=np.uint16)).save(tmp_path / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to display"
    Image.new("L", (12, 4), 200).save(tmp_path / "b.png", exif=exif)
    source = open_source("folder:%s" % tmp_path)
    deep, phone = source.read().image, source.read().image
    assert deep.dtype == np.uint8 and deep.shape == (6, 6) and (deep == 128).all()
    assert phone.shape == (12, 4) and (phone == 200).all()


def test_a_folder_source_skips_an_unreadable_image_and_counts_it(tmp_path):
    from PIL import Image

    from edge.line.sources import open_source

    for name in ("a.png", "c.png"):
        Image.new("L", (8, 8), 9).save(tmp_path / name)
    (tmp_path / "b.png").write_bytes(b"\x89PNG not really")
    source = open_source("folder:%s?loop=1" % tmp_path)
    paths = [source.read().truth["path"] for _ in range(4)]
    assert [os.path.basename(p) for p in paths] == ["a.png", "c.png", "a.png", "c.png"]
    assert source.skipped == 2 and source.last_skipped.startswith("b.png")
    for name in ("a.png", "c.png"):
        (tmp_path / name).write_bytes(b"gone bad")
    with pytest.raises(BinsortError, match="none of the 3 images could be read"):
        source.read()


def test_a_counters_file_with_wrong_types_does_not_stop_the_line(tmp_path):
    (tmp_path / "counters.json").write_text(
        json.dumps({"boxes": "many", "lanes": [1, 2], "labels": {"F06": "x"}, "frames": 7})
    )
    c = Counters(str(tmp_path))
    c.box("left", "F06", False)
    snap = c.snapshot()
    assert snap["boxes"] == 1 and snap["frames"] == 7 and snap["lanes"] == {"left": 1}
    (tmp_path / "counters.json").write_text("[" * 100_000)
    assert Counters(str(tmp_path)).data["boxes"] == 0


def test_the_simulated_belt_carries_each_box_past_the_camera_when_passes_says():
    """The simulator's physics agree with its frames: the middle of the frames whose centre
    line crosses a box is when passes() says the box's centre crossed it, within a frame
    period, on a belt whose speed wanders by 20%; downstream points come later in step."""
    from edge.line.sources.conveyor import ConveyorSimulator

    sim = ConveyorSimulator({"boxes": "6", "size": "64", "belt": "0.5", "vary": "0.2"})
    frames = []
    while (frame := sim.read()) is not None:
        frames.append(frame)
    assert frames[1].t - frames[0].t == pytest.approx(1 / 30)
    boxes = sorted({f.truth["box"] for f in frames if f.truth["box"] is not None})
    assert boxes == list(range(6))
    for box in boxes:
        seen = [f.t for f in frames if f.truth["box"] == box]
        assert (min(seen) + max(seen)) / 2 == pytest.approx(sim.passes(box, 0.0), abs=1 / 30)
        later = sim.passes(box, 0.6) - sim.passes(box, 0.0)
        assert 0.6 / (0.5 * 1.2) <= later <= 0.6 / (0.5 * 0.8)
    slow = ConveyorSimulator({"boxes": "1", "size": "64", "latency": "40"})
    a, b = slow.read(), slow.read()
    assert b.t - a.t == pytest.approx(2 / 30) and slow.now() == pytest.approx(b.t + 0.04)


def test_the_annotated_example_config_loads_and_names_a_source_that_parses():
    """edge/line/edge.toml, the file a line engineer copies, is a valid config."""
    from edge.line.config import load_config
    from edge.line.sources import parse_url
    from tests.shipkit import ROOT

    cfg = load_config(os.path.join(ROOT, "edge", "line", "edge.toml"))
    scheme, _, params = parse_url(cfg["source"]["url"])
    assert scheme == "picamera2" and params["exposure_us"] == "2000"
    assert cfg["actuator"]["lead_ms"] == cfg["actuator"]["pulse_ms"] / 2
    assert cfg["status"]["save_every_s"] == 60

"""The sorting daemon on the conveyor simulator: one decision per box, pulses on the right
(mock) GPIO pins, models swapped while it runs, trial and rollback, status, notify, config."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from edge.install.store import SlotStore
from edge.line.config import check_config
from edge.line.daemon import Daemon
from edge.line.sources.conveyor import decision_boxes
from protocol.transports import tcp
from tests.conftest import checkpoint_for, random_bn_model
from tests.hidden_packages import env_without
from tests.shipkit import EDGE, ROOT, Proxy, signed_manifest, snapshot

LANES = {"F06": "left", "K11": "left", "S19": "right", "V22": "right"}


def config(store, **over) -> dict:
    raw = {
        "model": {"store": store, "trial_boxes": 3, "trial_seconds": 0.01},
        "source": {"url": "sim:?boxes=12&seed=2&size=64&speed=6"},
        "decide": {"min_confidence": 0.0},
        "lanes": {"reject": "reject", "map": dict(LANES)},
        "actuator": {"kind": "log", "camera_to_diverter_m": 0.5, "pulse_ms": 100, "lead_ms": 40},
        "status": {"listen": "127.0.0.1:0", "save_every_s": 0.05},
        # an untrained model cannot tell belt from box: the simulated photo-eye can
        "photo_eye": {"pin": 4},
        "gpio": {"pin_factory": "mock"},
    }
    for section, values in over.items():
        if values is None:
            raw.pop(section, None)
        else:
            raw.setdefault(section, {}).update(values)
    return check_config(raw)


def install(station, version, payload=None, **extra):
    store = SlotStore(station["store"])
    payload = payload or station["payload"]
    manifest = store.verify(signed_manifest(payload, station["key"], version, **extra))
    path = station["tmp"] / ("v%d.bin" % version)
    path.write_bytes(payload)
    return store.install(manifest, str(path))


def confirmed_then_new(station):
    """v1 installed and through its trial, then v2 installed: (store, v1's slot, v2's slot)."""
    store = SlotStore(station["store"])
    first = install(station, 1)
    store.begin_trial()
    store.commit_trial("healthy")
    return store, first, install(station, 2)


def run_sim(daemon, max_frames=None):
    """Run the loop to the source's end; returns (decisions, truth of every frame). The daemon
    is made with record_truth=True."""
    daemon.run(max_frames)
    return list(daemon.decisions), daemon.truths


def test_photo_eye_gives_one_decision_per_box_and_pulses_the_lane_pins(station):
    install(station, 1)
    cfg = config(
        station["store"], actuator={"kind": "gpio", "pins": {"left": 17, "right": 27, "reject": 22}}
    )
    from gpiozero import Device

    daemon = Daemon(cfg, record_truth=True)
    decisions, truths = run_sim(daemon)
    boxes = {t["box"] for t in truths if t["box"] is not None}
    covered = decision_boxes(decisions, truths)
    assert len(boxes) == 12 and sorted(covered) == sorted(boxes)  # 0 missed, 0 double
    pulses = {}
    for lane, pin in (("left", 17), ("right", 27), ("reject", 22)):
        states = [s.state for s in Device.pin_factory.pin(pin).states]
        pulses[lane] = sum(1 for a, b in zip(states, states[1:], strict=False) if not a and b)
        assert states[-1] is False  # safe at shutdown
    expected = {lane: sum(1 for d in decisions if d["lane"] == lane) for lane in pulses}
    assert pulses == expected and sum(pulses.values()) == 12
    Device.pin_factory.reset()


def test_a_model_shipped_while_the_line_runs_is_swapped_in_without_losing_a_frame(station):
    install(station, 1)
    cfg = config(
        station["store"],
        receiver={"listen": "tcp://127.0.0.1:0"},
        source={"url": "sim:?boxes=40&seed=3&size=64&speed=6"},
    )
    daemon = Daemon(cfg, record_truth=True)
    daemon.start_services()
    url = "tcp://127.0.0.1:%d" % daemon.receiver_port
    shipped, outcome = threading.Event(), []

    def ship_once_sorting():  # v2 arrives while v1 sorts, however loaded the machine is
        try:
            deadline = time.monotonic() + 60
            while not daemon.decisions and time.monotonic() < deadline:
                time.sleep(0.01)
            tcp.ship(
                url, signed_manifest(station["payload"], station["key"], 2), station["payload"], {}
            )
            outcome.append("shipped")
        finally:
            shipped.set()

    open_source = daemon._open_source

    def open_belt_that_waits_for_the_ship():  # the simulator's belt (virtual time) stands
        open_source()  # still from the first decision until v2 has arrived and loaded
        read = daemon.source.read

        def read_when_shipped():
            if daemon.decisions and not daemon.swaps:
                shipped.wait(60)
                if daemon.pending is not None:  # v2 loading beside v1
                    daemon.pending[0].join(60)
            return read()

        daemon.source.read = read_when_shipped

    daemon._open_source = open_belt_that_waits_for_the_ship
    t = threading.Thread(target=ship_once_sorting)
    t.start()
    decisions, truths = run_sim(daemon)
    t.join()
    assert outcome == ["shipped"]
    versions = [d["model_version"] for d in decisions]
    assert 1 in versions and 2 in versions and versions == sorted(versions)
    assert len(truths) == daemon.counters.data["frames"]  # every frame went through a model
    swaps = [e["event"] for e in daemon.events if e["event"].startswith("swapped in")]
    assert len(swaps) == 1 and "v2" in swaps[0]
    assert SlotStore(station["store"]).trial() is None  # confirmed after its trial


def test_a_model_whose_labels_do_not_match_the_lanes_is_rolled_back(station):
    install(station, 1)
    daemon = Daemon(config(station["store"]), record_truth=True)
    import torch  # noqa: F401

    from host.pack import pack_model

    ckpt = dict(checkpoint_for("tiny"), labels=["A01", "B02", "C03", "D04", "empty"])
    other = pack_model(ckpt, random_bn_model("tiny", seed=3))
    install(station, 2, other)
    decisions, _ = run_sim(daemon, max_frames=60)
    state = SlotStore(station["store"]).summary()
    assert state["active"] == "a" and state["slots"]["b"]["failed"].startswith("failed to load")
    assert all(d["model_version"] == 1 for d in decisions)


def test_a_restart_during_a_trial_rolls_back_to_the_previous_model(station):
    install(station, 1)
    store = SlotStore(station["store"])
    store.commit_trial("test")
    install(station, 2)
    daemon = Daemon(config(station["store"]))
    assert daemon.trial is not None and store.trial()["running"] is True
    daemon.shutdown()  # as if the process died here: the trial never finished
    again = Daemon(config(station["store"]))
    assert again.model.record["version"] == 1 and again.model.slot == "a"
    assert store.summary()["slots"]["b"]["failed"].startswith("restarted during the trial")
    assert any("rollback" in e["event"] for e in again.events)
    again.shutdown()


def test_an_exception_from_a_model_on_trial_rolls_back(station):
    install(station, 1)
    SlotStore(station["store"]).commit_trial("test")
    install(station, 2)
    daemon = Daemon(config(station["store"]), record_truth=True)
    assert daemon.model.record["version"] == 2

    def broken(images):
        raise ValueError("simulated fault in the model")

    daemon.model.engine.classify = broken
    decisions, _ = run_sim(daemon, max_frames=100)
    assert daemon.model is not None and daemon.model.record["version"] == 1
    assert SlotStore(station["store"]).summary()["active"] == "a"
    assert decisions and all(d["model_version"] == 1 for d in decisions)


def test_no_model_keeps_the_actuator_safe_and_the_camera_idle(station):
    daemon = Daemon(config(station["store"]))
    assert daemon.model is None and daemon.status()["state"] == "no model"

    threading.Timer(0.5, daemon.stop).start()
    daemon.run()
    assert daemon.counters.data["frames"] == 0  # the camera was opened, never read
    assert [e[1] for e in daemon.actuator.events] == ["safe", "safe"]  # start and shutdown


def test_a_decision_is_held_for_the_pixel_eye_only_while_the_nearest_diverter_allows(station):
    """Without a photo-eye the tracker may hold a decision back for the pixel eye, until the
    nearest diverter's pulse (travel time less lead, less the margin) would be at risk."""

    def daemon(photo_eye=None, **actuator):
        over = dict(photo_eye=photo_eye, gpio=None if photo_eye is None else {}, actuator=actuator)
        d = Daemon(config(station["store"], **over))
        d.shutdown()  # frees the photo-eye's pin for the tests after this one
        return d

    far = daemon(belt_speed_mps=0.5, camera_to_diverter_m=0.5, distance_m={"left": 0.3}).tracker
    assert far.hold == 4  # enter_frames + leave_frames - 1
    assert far.hold_s == pytest.approx(0.3 / 0.5 - 0.04 - 0.1)  # the nearer lane decides
    near = daemon(belt_speed_mps=0.5, camera_to_diverter_m=0.06).tracker
    assert near.hold == 0 and near.pixel_eye is not None  # 120 ms of travel: no time to wait
    assert daemon(photo_eye={}).tracker.hold == 0  # a photo-eye times the boxes
    status = daemon().status()
    assert status["timing"] == {"from": "image", "by_image": 0, "by_model": 0, "held": 0}


def test_a_failing_source_is_retried_and_reported(station):
    install(station, 1)
    frames_dir = station["tmp"] / "frames"
    frames_dir.mkdir()
    from PIL import Image

    Image.new("L", (64, 64), 80).save(frames_dir / "belt.png")
    daemon = Daemon(
        config(station["store"], source={"url": "folder:%s?loop=1&fps=50" % frames_dir})
    )
    import shutil

    seen = {}

    def later():
        time.sleep(0.3)
        shutil.rmtree(frames_dir)  # the camera goes away
        time.sleep(0.6)
        seen["status"] = daemon.status()
        seen["frames"] = daemon.counters.data["frames"]
        frames_dir.mkdir()
        Image.new("L", (64, 64), 80).save(frames_dir / "belt.png")
        time.sleep(1.5)
        daemon.stop()

    threading.Thread(target=later).start()
    daemon.run()
    assert seen["status"]["state"] == "source error"
    assert seen["status"]["source"]["last_error"]
    assert daemon.counters.data["source_errors"] >= 2
    assert daemon.counters.data["frames"] > seen["frames"] > 0  # it came back


def test_status_endpoint_serves_json_and_a_page_and_counters_survive_a_restart(station):
    install(station, 1)
    cfg = config(station["store"])
    daemon = Daemon(cfg, record_truth=True)
    daemon.start_services()
    port = daemon.servers[0].port
    run_sim(daemon)
    first = daemon.counters.snapshot()
    assert first["boxes"] == 12
    daemon2 = Daemon(cfg)
    daemon2.start_services()
    port = daemon2.servers[0].port
    body = urllib.request.urlopen("http://127.0.0.1:%d/status.json" % port, timeout=5).read()
    status = json.loads(body)
    assert status["boxes"] == 12 and status["restarts"] == 1
    assert status["model"]["version"] == 1 and status["frames"] == first["frames"]
    from edge.engine import native

    assert status["engine"] == "native (%s)" % native.popcount_path()
    page = urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5).read().decode()
    station_name = socket.gethostname()  # no [status] station: the host's name
    assert "<h1 id=station>%s</h1>" % station_name in page and "viewport" in page
    assert ">12<" in page
    held = SlotStore(station["store"]).state()["slots"]["a"]
    assert status["store"]["active"] == "a" and status["store"]["slots"]["b"] is None
    assert status["store"]["slots"]["a"]["sha256"] == held["sha256"]
    daemon2.log("a line only the log has")
    log = json.loads(
        urllib.request.urlopen("http://127.0.0.1:%d/log.json?lines=3" % port, timeout=5).read()
    )
    assert log["daemon"][-1]["line"] == "a line only the log has" and len(log["daemon"]) <= 3
    assert len(log["store"]) == 3 and "install line-3 v1" in " ".join(log["store"])
    daemon2.shutdown()


def _write_config(path, store, **over):
    cfg = {
        "model": {"store": store},
        "source": {"url": "sim:?size=64&speed=6&fps=200"},
        "lanes": {"reject": "reject", "map": dict(LANES)},
        "status": {"listen": "127.0.0.1:0"},
    }
    for k, v in over.items():
        cfg.setdefault(k, {}).update(v)

    def toml_value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ %s }" % ", ".join("%s = %s" % (k, toml_value(x)) for k, x in v.items())
        return str(v)

    with open(path, "w") as f:
        for section, values in cfg.items():
            f.write("[%s]\n" % section)
            for k, v in values.items():
                f.write("%s = %s\n" % (k, toml_value(v)))


def run_under_systemd(cfg_path, tmp, watchdog_usec: int):
    """`binsort-edge run` as systemd would start it: $NOTIFY_SOCKET (a datagram socket the
    test reads) and $WATCHDOG_USEC. Returns (process, socket)."""
    sock_path = str(tmp / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC=str(watchdog_usec))
    proc = subprocess.Popen(
        EDGE + ["run", "--config", str(cfg_path), "--quiet"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    return proc, sock


def test_run_notifies_systemd_pings_the_watchdog_and_stops_cleanly_on_sigterm(station):
    install(station, 1)
    cfg_path = station["tmp"] / "edge.toml"
    _write_config(cfg_path, station["store"])
    proc, sock = run_under_systemd(cfg_path, station["tmp"], 200_000)
    got = []
    try:
        while got.count(b"WATCHDOG=1") < 3:
            got.append(sock.recv(256))
        proc.terminate()
        while b"STOPPING=1" not in got:
            got.append(sock.recv(256))
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    finally:
        proc.kill()
        sock.close()
    assert got[0] == b"READY=1"
    with open(os.path.join(station["store"], "daemon", "counters.json")) as f:
        counters = json.load(f)
    assert counters["frames"] > 0


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"model": {"store": 5}}, "[model] store: expected str"),
        ({"source": {"url": "webcam:0"}}, "unknown frame source"),
        ({"lanes": {"map": {"F06": "left", "Q99": "right"}}}, "lanes name Q99"),
        ({"actuator": {"kind": "gpio"}}, "needs a pins table"),
        ({"decide": {"min_confidence": 3}}, "between 0 and 1"),
        ({"bogus": {"x": 1}}, "unknown section [bogus]"),
        (
            {"receiver": {"listen": "tcp://127.0.0.1:0", "first_frame_s": 0}},
            "[receiver] first_frame_s must be positive",
        ),
        (
            {
                "photo_eye": {"pin": 17},
                "gpio": {"pin_factory": "mock"},
                "actuator": {"kind": "gpio", "pins": {"left": 17, "right": 27, "reject": 22}},
            },
            "in use",
        ),
    ],
)
def test_config_mistakes_are_one_line_errors_at_start(station, edit, message):
    install(station, 1)
    path = station["tmp"] / "edge.toml"
    _write_config(path, station["store"], **edit)
    out = subprocess.run(
        EDGE + ["run", "--config", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_config_that_is_not_utf8_text_is_a_one_line_error(station):
    """tomllib decodes the whole file before parsing, and its UnicodeDecodeError is not a
    TOMLDecodeError: a model or a Latin-1 file given as the config."""
    path = station["tmp"] / "edge.toml"
    for text in (b'[model]\nstore = "caf\xe9"\n', b"BSNN\x01\x00\x03\x00\xe7\x89"):
        path.write_bytes(text)
        for command in (["run"], ["capture", "--dir", str(station["tmp"] / "cap")]):
            out = subprocess.run(
                EDGE + command + ["--config", str(path)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
            )
            assert out.returncode == 2, out.stderr
            assert "not valid TOML: not UTF-8 text" in out.stderr, out.stderr
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_daemon_whose_config_uses_no_gpio_runs_without_gpiozero(station):
    install(station, 1)
    env = env_without(station["tmp"], "gpiozero")
    plain = station["tmp"] / "plain.toml"
    _write_config(plain, station["store"], actuator={"kind": "log"})
    report = station["tmp"] / "report.json"
    out = subprocess.run(
        EDGE + ["run", "--config", str(plain), "--max-frames", "80", "--report", str(report)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(report.read_text())["status"]["frames"] == 80
    # the same environment does hide gpiozero: a config with a photo-eye needs it
    eye = station["tmp"] / "eye.toml"
    _write_config(eye, station["store"], photo_eye={"pin": 4}, gpio={"pin_factory": "mock"})
    out = subprocess.run(
        EDGE + ["run", "--config", str(eye), "--max-frames", "80"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2 and "GPIO needs gpiozero" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_missing_camera_keeps_the_page_receiver_and_watchdog_up(station, tmp_path):
    """No camera is no reason for a restart loop with no page and no way to ship a fix: the
    daemon runs, feeds the watchdog while it retries the source, tells systemd and its status
    page why, installs a model shipped meanwhile, and stops cleanly on SIGTERM."""
    from tests.conftest import free_port

    install(station, 1)
    path = station["tmp"] / "edge.toml"
    status_port, rx_port = free_port(), free_port()
    _write_config(
        path,
        station["store"],
        source={"url": "picamera2:", "retry_max_s": 0.5},
        status={"listen": "127.0.0.1:%d" % status_port},
        receiver={"listen": "tcp://127.0.0.1:%d" % rx_port},
    )
    proc, sock = run_under_systemd(path, tmp_path, 400_000)
    got = []
    try:
        while got.count(b"WATCHDOG=1") < 6:
            got.append(sock.recv(256))
        url = "http://127.0.0.1:%d/status.json" % status_port
        status = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert status["state"] == "source error"
        assert "picamera2 is not installed" in status["source"]["last_error"]
        payload = station["payload"]
        manifest = signed_manifest(payload, station["key"], 2)
        shipped = tcp.ship("tcp://127.0.0.1:%d" % rx_port, manifest, payload, {})
        assert shipped["version"] == 2
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    finally:
        proc.kill()
        sock.close()
    assert any(m.startswith(b"STATUS=source error: picamera2 is not installed") for m in got)


def test_plc_actuator_sends_safe_then_one_sort_line_per_box(station):
    from tests.shipkit import Proxy

    install(station, 1)
    proxy = Proxy("pty")
    try:
        import serial

        plc = serial.Serial(proxy.endpoints["b"], 9600, timeout=2)
        cfg = config(
            station["store"],
            actuator={
                "kind": "plc",
                "url": "serial://%s?baud=9600" % proxy.endpoints["a"],
                "camera_to_diverter_m": 0.6,
                "belt_speed_mps": 0.3,
            },
        )
        daemon = Daemon(cfg, record_truth=True)
        decisions, _ = run_sim(daemon)
        time.sleep(0.5)
        lines = plc.read(plc.in_waiting or 1).decode().splitlines()
        plc.close()
    finally:
        proxy.stop()
    assert lines[0] == "SAFE" and lines[-1] == "SAFE"
    sorts = [ln.split() for ln in lines if ln.startswith("SORT")]
    # SORT <seq> <lane> <in_ms>: from sending to the diverter's moment, the box's centre
    # 0.6 m / 0.3 m/s after it passed the camera's line, less the lead
    plan = list(daemon.actuator.plan)
    assert [(int(s[1]), s[2], int(s[3])) for s in sorts] == [
        (p["seq"], p["lane"], round(1000 * (p["on"] - p["decided"]))) for p in plan
    ]
    assert [(d["seq"], d["lane"]) for d in decisions] == [(p["seq"], p["lane"]) for p in plan]
    for d, p in zip(decisions, plan, strict=True):
        assert p["on"] == pytest.approx(d["t"] + 2.0 - 0.04, abs=1e-4)  # lead_ms = 40
        assert 0 < p["on"] - p["decided"] < 2.0
    assert len(sorts) == 12


def _active_model_is_complete_and_verified(store_dir) -> int:
    """The version of the active model after a restart; fails if it is not whole and valid."""
    import hashlib

    from edge.engine import load_engine

    store = SlotStore(store_dir)
    store.recover()
    slot, rec = store.active()
    assert slot is not None, "no model active after the crash"
    path = store.model_path(slot)
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == rec["sha256"]
    assert rec["complete"] and load_engine(path).self_test() == []
    return rec["version"]


@pytest.mark.parametrize("operation", ["install", "activate"])
def test_a_power_cut_at_every_step_leaves_a_complete_verified_model_active(station, operation):
    import shutil

    install(station, 1)
    SlotStore(station["store"]).commit_trial("test")
    manifest = station["tmp"] / "v2.manifest"
    manifest.write_bytes(signed_manifest(station["payload"], station["key"], 2))
    if operation == "activate":
        install(station, 2)
    template = station["tmp"] / "template"
    shutil.copytree(station["store"], template)
    versions, k = set(), 1
    while True:
        shutil.rmtree(station["store"])
        shutil.copytree(template, station["store"])
        payload = station["tmp"] / "payload.bnn"
        payload.write_bytes(station["payload"])
        args = [
            sys.executable,
            os.path.join(ROOT, "tests", "crashing_store.py"),
            str(k),
            operation,
            station["store"],
        ]
        if operation == "install":
            args += [str(manifest), str(payload)]
        out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)
        versions.add(_active_model_is_complete_and_verified(station["store"]))
        if out.returncode == 0:
            assert out.stdout.startswith("completed")
            break
        assert out.returncode == 137, out.stderr
        k += 1
    assert k > 5  # the operation really has that many steps, each one was cut
    assert versions == {1, 2}  # the old model until the switch, the new one after it


def test_pranc_prefixes_upgrade_the_running_model_as_they_arrive(station):

    import numpy as np

    from host.pack_pranc import pack_pranc
    from host.ship import build_manifest
    from tests.conftest import LABELS, random_inputs
    from tests.test_pranc_stream import random_pranc

    images = random_inputs(40, 32, seed=2)
    data = pack_pranc(checkpoint_for("tiny"), random_pranc(), (images, np.arange(40) % len(LABELS)))
    (station["tmp"] / "m.pranc").write_bytes(data)
    manifest, payload, signed = build_manifest(str(station["tmp"] / "m.pranc"), station["key"], 5)
    cfg = config(
        station["store"],
        receiver={"listen": "tcp://127.0.0.1:0", "pranc_min_accuracy": 0.0},
        source={"url": "sim:?seed=3&size=64&speed=6&fps=300"},
    )
    daemon = Daemon(cfg, record_truth=True)
    daemon.start_services()
    # at 9,600 baud the 4 KB stream takes about 5 s, so its prefixes land while the belt runs;
    # unthrottled, a busy machine once had all of it in before the belt's first frame, and the
    # daemon rightly swapped in the whole model at once
    proxy = Proxy("tcp", "--to", "127.0.0.1:%d" % daemon.receiver_port, "--baud", "9600")
    url = "tcp://" + proxy.endpoints["listen"]
    shipper = threading.Thread(target=tcp.ship, args=(url, manifest, payload, {}), daemon=True)
    shipper.start()

    def stop_when_complete():  # the belt runs until the whole stream is in, 30 s at most
        end = time.monotonic() + 30
        while time.monotonic() < end:
            m = daemon.model
            # the whole stream in, and the sender has its last answer
            done = m is not None and m.record["complete"] and not shipper.is_alive()
            if done and len(daemon.decisions) > 3:
                break
            time.sleep(0.05)
        daemon.stop()

    threading.Thread(target=stop_when_complete, daemon=True).start()
    try:
        decisions, _ = run_sim(daemon)
    finally:
        proxy.stop()
    assert not shipper.is_alive()
    swaps = [e["event"] for e in daemon.events if e["event"].startswith("swapped in")]
    assert len(swaps) >= 2 and all("pranc" in s for s in swaps)
    sizes = [int(s.split(", ")[2].split()[0]) for s in swaps]
    assert sizes == sorted(sizes) and sizes[-1] == len(payload)  # longer prefixes, then all
    assert daemon.model.record["complete"] and decisions


def test_an_install_during_a_trial_keeps_the_confirmed_model_as_the_rollback_target(station):
    store = SlotStore(station["store"])
    first = install(station, 1)
    store.begin_trial()
    store.commit_trial("healthy")
    confirmed = snapshot(station["store"])["files"]
    second = install(station, 2)  # on trial in the other slot
    store.begin_trial()
    third = install(station, 3)  # arrives before the trial of 2 ends
    state = store.state()
    assert third == second != first  # version 2 gave way; version 1 was not touched
    assert state["trial"]["previous"] == first and state["slots"][first]["version"] == 1
    kept = {k: v for k, v in snapshot(station["store"])["files"].items() if k.startswith(first)}
    assert kept == {k: v for k, v in confirmed.items() if k.startswith(first)}
    store.begin_trial()
    assert store.rollback("the new model failed") == first  # back to the confirmed model
    assert store.state()["slots"][first]["version"] == 1


def test_a_slot_whose_file_no_longer_matches_its_record_is_not_run(station, lively_tiny_model):
    """A valid model put in a slot behind the store's back (or a disk that returns other
    bytes) is refused at load, by the SHA-256 recorded at install, and the previous model runs."""
    store, first, second = confirmed_then_new(station)
    with open(store.model_path(second), "wb") as f:
        f.write(lively_tiny_model[1])  # loads and passes its own self-test, but is not v2
    daemon = Daemon(config(station["store"]))
    try:
        assert daemon.model is None or daemon.model.slot == first
        daemon._load_at_start()
        assert daemon.model.slot == first and daemon.model.record["version"] == 1
        assert any("SHA-256" in e["event"] for e in daemon.events)
    finally:
        daemon.shutdown()


def test_the_version_floor_survives_a_rollback_and_rollbacks_expire_and_bind(station):
    """After a rollback from v3 to v2, a captured v2.5-style older manifest (v2, never
    installed) is still refused: the floor is the newest version ever installed. A signed
    rollback is refused once expired, and a manifest bound to another store is refused."""
    from edge.install.store import Rejected

    store = SlotStore(station["store"])
    install(station, 3)
    store.begin_trial()
    assert store.rollback("bad") is None and store.summary()["version_floor"] == 3
    with pytest.raises(Rejected, match="newest this device has installed"):
        install(station, 2, model_id="captured")
    expired = signed_manifest(
        station["payload"], station["key"], 1, rollback=True, expires=int(time.time()) - 1
    )
    with pytest.raises(Rejected, match="expired"):
        store.verify(expired)
    other = signed_manifest(station["payload"], station["key"], 9, store="0" * 16)
    with pytest.raises(Rejected, match="another device"):
        store.verify(other)
    mine = store.summary()["store_id"]
    assert len(mine) == 16
    store.verify(signed_manifest(station["payload"], station["key"], 9, store=mine))
    assert install(station, 1, rollback=True)  # a fresh signed rollback goes below the floor
    assert store.summary()["version_floor"] == 3


def test_abandoned_partial_transfers_are_removed_and_live_ones_kept(station):
    store = SlotStore(station["store"])
    folder = os.path.join(station["store"], "partial")
    old = [os.path.join(folder, "ab" * 32 + ext) for ext in (".partial", ".json")]
    new = os.path.join(folder, "cd" * 32 + ".partial")
    for path in old + [new]:
        with open(path, "wb") as f:
            f.write(b"x" * 100)
    week_ago = time.time() - 8 * 86400
    for path in old:
        os.utime(path, (week_ago, week_ago))
    assert sorted(store.drop_abandoned()) == sorted(os.path.basename(p) for p in old)
    assert os.listdir(folder) == [os.path.basename(new)]


def test_a_receiver_that_stops_ends_the_daemon_without_failing_the_model_on_trial(station):
    """No receiver, no way to ship a fix: the daemon ends (systemd starts it again), and
    the model on trial is not rolled back for it: that was not the model's fault."""
    install(station, 1)
    cfg = config(
        station["store"],
        model={"trial_boxes": 10_000, "trial_seconds": 600.0},  # still on trial at the end
        receiver={"listen": "tcp://127.0.0.1:0"},
        source={"url": "sim:?seed=3&size=64&speed=6"},
    )
    daemon = Daemon(cfg, record_truth=True)
    daemon.start_services()
    assert SlotStore(station["store"]).trial()["running"]
    listener = next(s for s in daemon.servers if hasattr(s, "accept"))
    listener.close()  # the receiver thread ends
    t = time.monotonic()
    daemon.run(max_frames=5000)
    assert time.monotonic() - t < 30 and daemon.fault == "the TCP receiver stopped"
    store = SlotStore(station["store"])
    assert store.trial() == dict(store.trial(), running=False)  # paused, not failed
    assert store.recover() is None and store.active()[1]["version"] == 1


def test_a_wedged_receiver_ends_the_daemon_like_a_stopped_one(station, monkeypatch):
    """A receiver loop that stops going round (blocked for good) is as good as ended: the
    daemon notices from its frame loop, ends with a fault, and the trial is paused."""
    import edge.line.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "RECEIVER_STALL_S", 1.0)
    install(station, 1)
    cfg = config(
        station["store"],
        model={"trial_boxes": 10_000, "trial_seconds": 600.0},
        receiver={"listen": "tcp://127.0.0.1:0"},
        source={"url": "sim:?seed=3&size=64&speed=6"},
    )
    daemon = Daemon(cfg)
    daemon.start_services()
    listener = next(s for s in daemon.servers if hasattr(s, "accept"))
    time.sleep(0.3)
    assert daemon.status()["receiver"]["loop_age_s"] < 1.0
    wedged = threading.Event()
    listener.accept = lambda timeout: wedged.wait() and time.sleep(timeout)  # blocks for good
    t = time.monotonic()
    daemon.run(max_frames=100_000)
    wedged.set()
    assert time.monotonic() - t < 30 and daemon.fault == "the TCP receiver (wedged) stopped"
    assert SlotStore(station["store"]).trial()["running"] is False


def test_errors_in_work_the_line_does_not_need_never_stop_it(station, tmp_path):
    """A full disk under the counters, captures that cannot be written, a store that cannot
    be read for a while: every box is still decided, each kind of error is counted in the
    status and logged once, not once per frame."""
    install(station, 1)
    cfg = config(
        station["store"],
        source={"url": "sim:?boxes=12&seed=2&size=64&speed=6"},
        capture={"dir": str(tmp_path / "captures"), "max_mb": 5},
    )
    daemon = Daemon(cfg, record_truth=True)
    reads = {"n": 0}
    state = daemon.store.state

    def flaky_state():
        reads["n"] += 1
        if reads["n"] < 40:
            raise OSError(5, "Input/output error")
        return state()

    def full_disk(*_):
        raise OSError(28, "No space left on device")

    daemon.counters.save = full_disk
    daemon.capture.offer = full_disk
    daemon.store.state = flaky_state
    daemon.store_mtime = None  # make the loop read the store on every frame
    decisions, truths = run_sim(daemon)
    boxes = {t["box"] for t in truths if t["box"] is not None}
    assert sorted(decision_boxes(decisions, truths)) == sorted(boxes) and len(boxes) == 12
    errors = daemon.status()["io_errors"]
    assert errors["counters"]["count"] >= 2 and "No space left" in errors["counters"]["last"]
    assert errors["capture"]["count"] == 12 and errors["store"]["count"] >= 2
    logged = [e["event"] for e in daemon.events if "the line goes on" in e["event"]]
    assert sorted(line.split(":")[0] for line in logged) == ["capture", "counters", "store"]
    assert daemon.fault is None


def test_a_fault_outside_the_model_ends_the_loop_without_failing_the_model_on_trial(station):
    """Not the model's doing: the loop ends with `fault` set (systemd starts the daemon again)
    and the trial is paused; after the restart the same model is active, its trial running."""
    install(station, 1)
    cfg = config(station["store"], model={"trial_boxes": 10_000, "trial_seconds": 600.0})
    daemon = Daemon(cfg, record_truth=True)
    assert SlotStore(station["store"]).trial()["running"]

    def broken(*_):
        raise RuntimeError("a bug in the tracker")

    daemon.tracker.push = broken
    daemon.run(max_frames=100)
    assert daemon.fault == "RuntimeError: a bug in the tracker"
    assert daemon.counters.data["frames"] == 0
    store = SlotStore(station["store"])
    assert store.trial()["running"] is False
    again = Daemon(cfg)
    try:
        assert again.model.record["version"] == 1 and again.trial is not None
        assert store.trial()["running"] is True and not store.summary()["slots"]["a"].get("failed")
    finally:
        again.shutdown()


def test_a_clean_stop_during_a_trial_does_not_fail_the_model(station):
    """SIGTERM (a reboot, `systemctl restart`) is no verdict on the model on trial."""
    install(station, 1)
    cfg = config(station["store"], model={"trial_boxes": 10_000, "trial_seconds": 600.0})
    daemon = Daemon(cfg)
    daemon.stop()
    daemon.run()
    store = SlotStore(station["store"])
    assert store.recover() is None and store.active()[1]["version"] == 1
    assert store.trial()["slot"] == store.active()[0]


def test_the_signal_handler_never_waits_on_the_stop_events_lock(station):
    """SIGTERM lands in the main thread between two bytecodes, possibly while that thread is
    inside stop_event.wait() holding the Event's lock: a handler that took the lock would hang
    the daemon for good. The handler returns at once; the loop stops on the flag it set."""
    daemon = Daemon(config(station["store"]))
    lock = daemon.stop_event._cond  # what Event.wait holds between its checks
    done = threading.Event()
    with lock:
        handler = threading.Thread(
            target=lambda: (daemon.on_signal(signal.SIGTERM, None), done.set()), daemon=True
        )
        handler.start()
        assert done.wait(5), "the signal handler waited on the stop event's lock"
    started = time.monotonic()
    daemon.run()  # no model: the no-model rest sees the flag on its next turn
    assert time.monotonic() - started < 5 and daemon.stop_event.is_set()


def test_rollback_takes_an_intact_slot_and_marks_a_damaged_one(station):
    """The rollback target is checked against its SHA-256 before it is chosen: a damaged
    previous model is marked failed, and with no intact slot left none is active (the actuator
    stays safe) rather than a model that would fail at load."""
    store, first, second = confirmed_then_new(station)
    with open(store.model_path(first), "r+b") as f:
        f.seek(100)
        f.write(b"\xff\x00")
    store.begin_trial()
    assert store.rollback("v2 failed") is None
    slots = store.summary()["slots"]
    assert slots[second]["failed"] == "v2 failed" and "SHA-256" in slots[first]["failed"]
    # repaired, and with no trial: the other slot is the target when it is intact
    from edge.files import write_atomic

    with open(store.model_path(first), "wb") as f:
        f.write(station["payload"])
    state = store.state()
    for rec in state["slots"].values():
        rec.pop("failed")
    state["active"] = second
    write_atomic(os.path.join(station["store"], "store.json"), json.dumps(state).encode())
    assert store.rollback("v2 does not load") == first


DIVERTERS = {"left": 0.4, "right": 0.6, "reject": 0.8}


def sorting_run(station, belt_mps, assumed_mps, latency_ms=0, boxes=30):
    from edge.line.sources.conveyor import score_sorting

    cfg = config(
        station["store"],
        source={
            "url": "sim:?boxes=%d&seed=4&size=64&belt=%s&latency=%d" % (boxes, belt_mps, latency_ms)
        },
        actuator={
            "belt_speed_mps": assumed_mps,
            "distance_m": dict(DIVERTERS),
            "lead_ms": 50,
            "pulse_ms": 150,
        },
    )
    daemon = Daemon(cfg, record_truth=True)
    decisions, truths = run_sim(daemon)
    score = score_sorting(
        daemon.source, decisions, truths, list(daemon.actuator.plan), LANES, "reject", DIVERTERS
    )
    return score, daemon


@pytest.mark.parametrize("latency_ms", [0, 40])
def test_every_diverter_hits_its_box_on_the_physical_belt(station, latency_ms):
    """At 0.5 m/s, with 40 ms of inference a frame as on a Pi Zero or none, the diverters are
    timed from when each box passed the camera: every box is hit by its decided lane's
    diverter and no other, so sorted_right is exactly the fraction of right decisions."""
    install(station, 1)
    score, daemon = sorting_run(station, 0.5, 0.5, latency_ms)
    decisions = daemon.decisions
    assert score["late"] == score["early"] == score["wrong_diverter"] == 0, score
    assert score["sorted_right"] == score["lane_right"] and daemon.actuator.late == 0
    sim = daemon.source
    frame_s = sim.t / (sim.index - 1)  # frames the camera took during inference are dropped
    assert frame_s == pytest.approx(1 / 15 if latency_ms else 1 / 30)
    print(score, "boxes", len(decisions), "frames", sim.index)


def test_a_wrong_belt_speed_is_seen_as_boxes_hit_late_or_early(station):
    """The same line with the belt 20% faster than the config says: the scorer sees the
    diverters miss (the physics, not the labels)."""
    install(station, 1)
    score, _ = sorting_run(station, 0.6, 0.5)
    print(score)
    assert score["early"] + score["late"] > 0 and score["sorted_right"] < score["lane_right"]


def test_the_log_summarises_boxes_instead_of_a_line_per_box(station):
    """Months on an SD card: one line per period with the boxes per lane, never one per box;
    refusals and swaps still have lines of their own."""
    install(station, 1)
    lines = []
    cfg = config(station["store"], status={"summary_every_s": 0.02})
    daemon = Daemon(cfg, log=lines.append, record_truth=True)
    decisions, _ = run_sim(daemon)
    summaries = [ln for ln in lines if ln.startswith("last ")]
    assert summaries and not [ln for ln in lines if ln.startswith("box ")]
    counted = sum(int(ln.split(": ")[1].split()[0]) for ln in summaries)
    assert 0 < counted <= len(decisions) == 12  # the boxes after the last summary are not in one
    assert all("line-3 v1" in ln for ln in summaries)


def code_reader(daemon, lag_frames):
    """Make the daemon's model a stand-in that reads each box's code from its `lag_frames`-th
    frame on the centre line to its last (the simulator's truth), as a model reads a code on
    the box's trailing side: the middle of its box frames is late."""
    import numpy as np

    labels = daemon.model.labels

    def classify(x):
        now, then = daemon.truths[-1], daemon.truths[-1 - lag_frames : -lag_frames]
        reading = now["box"] is not None and then and then[0]["box"] == now["box"]
        scores = np.zeros((1, len(labels)))
        scores[0, labels.index(now["label"] if reading else "empty")] = 8.0
        return scores.argmax(axis=1), np.ones(1), scores

    daemon.model.engine.classify = classify


@pytest.mark.parametrize("timing", ["image", "model"])
def test_without_a_photo_eye_the_pixels_time_each_box(station, timing):
    """No photo-eye, and a model that starts each box four frames late (133 ms at 30 frames a
    second): timed from the middle of its box frames, pulses come late; timed from the pixels
    at the centre line (the default), every box after the first (which passes while the eye
    still learns the belt) is hit, and the status says how each box was timed."""
    from edge.line.sources.conveyor import decision_boxes, score_sorting

    install(station, 1)
    cfg = config(
        station["store"],
        photo_eye=None,
        gpio=None,
        source={"url": "sim:?boxes=30&seed=4&size=64&belt=0.5"},
        actuator={"belt_speed_mps": 0.5, "distance_m": dict(DIVERTERS), "lead_ms": 50},
        decide={"timing": timing},
    )
    cfg["actuator"]["pulse_ms"] = 150.0
    daemon = Daemon(cfg, record_truth=True)
    code_reader(daemon, 4)
    decisions, truths = run_sim(daemon)
    plan = list(daemon.actuator.plan)
    score = score_sorting(daemon.source, decisions, truths, plan, LANES, "reject", DIVERTERS)
    status = daemon.status()["timing"]
    assert len(decisions) == 30 and score["lane_right"] == 1.0
    if timing == "model":
        assert score["late"] > 5 and status == {
            "from": "model",
            "by_image": 0,
            "by_model": 0,
            "held": 0,
        }
        return
    # the first box passes before the eye has learnt the belt: the model's middle times it
    assert status == {"from": "image", "by_image": 29, "by_model": 1, "held": 0}
    assert decisions[0]["timing"] == "model"
    assert {d["timing"] for d in decisions[1:]} == {"image"}
    boxes = dict(zip([d["seq"] for d in decisions], decision_boxes(decisions, truths), strict=True))
    for p in plan[1:]:  # every pulse is on when its box passes its diverter
        assert p["start"] <= daemon.source.passes(boxes[p["seq"]], DIVERTERS[p["lane"]]) <= p["off"]
    assert score["late"] <= 1 and score["early"] == score["wrong_diverter"] == 0

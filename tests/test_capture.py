"""The capture ring on the device: one capture per decided box with its decision, bounded in
size (oldest dropped), a doubtful-only mode, nothing half-written taken for a capture, no
writing on a nearly full disk, and `binsort-edge capture`, which watches without sorting."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np

from edge.install.store import SlotStore
from edge.line.capture import BoxFrames, CaptureRing
from edge.line.daemon import Daemon
from tests.shipkit import ROOT
from tests.test_daemon import config, install, run_sim

CAPTURE = {"max_mb": 8.0, "keep": "all", "full_frame": True, "min_free_mb": 0.0}


def sidecars(ring: str) -> list:
    out = []
    for name in sorted(os.listdir(ring)):
        if name.endswith(".json") and name != "ring.json":
            with open(os.path.join(ring, name)) as f:
                out.append(json.load(f))
    return out


def read_pnm(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        data = f.read()
    magic, w, h, _, pixels = data.split(maxsplit=4)
    shape = (int(h), int(w)) if magic == b"P5" else (int(h), int(w), 3)
    return np.frombuffer(pixels, np.uint8).reshape(shape)


def capture_run(station, ring="ring", **capture):
    if not SlotStore(station["store"]).active()[0]:
        install(station, 1)
    ring = str(station["tmp"] / ring)
    cfg = config(station["store"], capture=dict(CAPTURE, dir=ring, **capture))
    daemon = Daemon(cfg, record_truth=True)
    decisions, truths = run_sim(daemon)
    return ring, decisions, daemon


def test_every_decided_box_leaves_one_capture_with_its_decision(station):
    ring, decisions, daemon = capture_run(station)
    metas = sidecars(ring)
    assert len(decisions) == 12 and len(metas) == 12
    for d, m in zip(decisions, metas, strict=True):
        assert (m["label"], m["confidence"], m["lane"]) == (d["label"], d["confidence"], d["lane"])
        assert d["first_frame"] <= m["frame"] <= d["last_frame"]
        assert len(m["probabilities"]) == len(m["labels"]) == 5
        assert m["model"]["version"] == 1
        for f in m["files"].values():
            with open(os.path.join(ring, f["name"]), "rb") as fh:
                data = fh.read()
            assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
        assert read_pnm(os.path.join(ring, m["files"]["input"]["name"])).shape == (32, 32)
        assert read_pnm(os.path.join(ring, m["files"]["frame"]["name"])).shape[:2] == (64, 64)
    assert daemon.status()["capture"]["kept"] == 12
    assert not [f for f in os.listdir(ring) if f.endswith(".tmp")]


def test_the_ring_keeps_within_max_mb_by_dropping_the_oldest(station):
    max_bytes = 5000  # room for a few 32x32 inputs and their sidecars
    ring, decisions, daemon = capture_run(station, full_frame=False, max_mb=max_bytes / 2**20)
    names = sorted(f for f in os.listdir(ring) if f != "ring.json")
    sizes = {}
    for f in names:
        stem = f.split(".")[0]
        sizes[stem] = sizes.get(stem, 0) + os.path.getsize(os.path.join(ring, f))
    used = sum(sizes.values())
    summary = daemon.status()["capture"]
    assert summary["bytes"] == used <= max_bytes < used + min(sizes.values())  # full, not over
    kept = [m["name"] for m in sidecars(ring)]
    assert 2 <= len(kept) < 12 and summary["evicted"] == 12 - len(kept)
    assert [int(n[:8]) for n in kept] == list(range(12 - len(kept), 12))  # the newest stay
    assert len(names) == 2 * len(kept)  # no image outlives its sidecar


def test_doubtful_mode_keeps_only_rejected_and_unsure_boxes(station):
    _, decisions, _ = capture_run(station, keep="all")
    # a threshold in the widest gap between two middle confidences: the decisions' rounding
    # (4 places) cannot put a box on the other side of it
    c = sorted(d["confidence"] for d in decisions)
    k = max(range(3, len(c) - 4), key=lambda i: c[i + 1] - c[i])
    assert c[k + 1] - c[k] > 1e-3
    threshold = (c[k] + c[k + 1]) / 2
    ring, again, _ = capture_run(station, "doubtful", keep="doubtful", doubt_below=threshold)
    wanted = [d["seq"] for d in again if d["confidence"] < threshold or d["reject_reason"]]
    kept = [m["confidence"] for m in sidecars(ring)]
    assert 0 < len(kept) == len(wanted) < len(again)
    assert all(c < threshold for c in kept)


def test_what_a_crash_left_half_written_is_cleared_and_never_counted(tmp_path):
    ring = tmp_path / "ring"
    CaptureRing(str(ring)).close()
    (ring / "00000007-20261129T100000Z.pgm").write_bytes(b"P5\n1 1\n255\n\0")  # no sidecar
    (ring / "00000008-20261129T100001Z.json.tmp").write_bytes(b"{")
    (ring / "00000006-20261129T095959Z.pgm").write_bytes(b"P5\n1 1\n255\n\0")
    (ring / "00000006-20261129T095959Z.json").write_bytes(b"{}")
    r = CaptureRing(str(ring))
    r.close()
    assert sorted(os.listdir(ring)) == [
        "00000006-20261129T095959Z.json",
        "00000006-20261129T095959Z.pgm",
        "ring.json",
    ]
    assert r.summary()["captures"] == 1 and r.next_number == 8  # never reuses a number a file had


def test_a_nearly_full_disk_pauses_capture_and_says_so(station):
    events = []
    install(station, 1)
    ring = str(station["tmp"] / "ring")
    cfg = config(station["store"], capture=dict(CAPTURE, dir=ring, min_free_mb=1e9))
    daemon = Daemon(cfg, log=events.append, record_truth=True)
    decisions, _ = run_sim(daemon)
    assert len(decisions) == 12 and sidecars(ring) == []
    assert daemon.status()["capture"]["skipped_low_disk"] == 12
    assert [e for e in events if e.startswith("capture: paused")]


def test_box_frames_keep_the_middle_of_a_box_of_any_length():
    for length in (1, 2, 5, 16, 17, 40, 333):
        frames = BoxFrames(keep=16)
        for i in range(100, 100 + length):
            frames.add(i, i)
        assert len(frames.items) <= 16
        index, _ = frames.middle(100, 99 + length)
        assert abs(index - (100 + (length - 1) / 2)) <= max(1, length / 16)


def test_capture_command_watches_without_sorting_and_refuses_an_empty_store(station):
    path = station["tmp"] / "edge.toml"
    path.write_text(
        "\n".join(
            [
                "[model]",
                'store = "%s"' % station["store"],
                "[source]",
                'url = "sim:?boxes=6&seed=2&size=64&speed=6"',
                "[photo_eye]",
                "pin = 4",
                "[gpio]",
                'pin_factory = "mock"',
                "[lanes]",
                'reject = "reject"',
                'map = { F06 = "left" }',
                "[actuator]",
                'kind = "gpio"',
                "pins = { left = 17, reject = 22 }",
            ]
        )
    )
    ring = station["tmp"] / "ring"
    cmd = [sys.executable, "-m", "edge.cli", "capture", "--config", str(path), "--dir", str(ring)]
    empty = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert empty.returncode == 2 and "capture needs a model" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
    install(station, 1)
    out = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "6 boxes seen, 6 captures kept" in out.stdout
    assert len(sidecars(str(ring))) == 6

"""Tier 0 (issue 19): the thresholds re-estimated on the device from unlabelled frames.

The NORM ratios a `.bnn` carries, the re-estimate itself (a fixed point on its own frames;
undoing a brightness shift at the first layer), the store's local install, trial and undo,
`binsort-edge recalibrate`, the daemon's schedule, and deltas that carry NORM. The trained-model
measurement (a washed-out camera undone) is in the default demo's end-to-end test."""

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

from edge.engine.numpy_engine import _Prepared
from edge.engine.recalibrate import _accumulators, recalibrate
from edge.imaging.box_images import render
from edge.imaging.preprocess import preprocess
from edge.install import recalibration
from edge.install.store import SlotStore
from edge.line.capture import CaptureRing
from edge.line.config import check_config
from edge.line.daemon import Daemon
from protocol import bnn
from protocol.delta import NORM, apply_delta, write_delta
from protocol.errors import BinsortError, FormatError
from tests.conftest import LABELS, checkpoint_for, lively_model
from tests.shipkit import ROOT, signed_manifest
from tests.test_daemon import config, install, run_sim


@pytest.fixture(scope="module")
def lively_tiny():
    from host.pack import pack_model

    model = lively_model("tiny")
    return model, pack_model(checkpoint_for("tiny"), model)


def box_inputs(n: int, size: int, seed: int = 7) -> np.ndarray:
    frames = [np.asarray(render(seed, "t", LABELS[i % 4], i)) for i in range(n)]
    return np.stack([preprocess(f, size, size) for f in frames])


def first_layer_bits(model, x) -> np.ndarray:
    p = _Prepared(model.layers[0])
    return np.unpackbits(p.threshold(_accumulators(p, x)))


def test_a_packed_model_carries_each_channels_beta_over_gamma(tiny_model):
    """NORM (format 1.2): beta/gamma per channel to int8 with a layer scale; channels whose
    gamma is zero (a constant output) are marked to keep their threshold."""
    torch_model, data = tiny_model
    model = bnn.read_bnn(data)
    bns = [m.bn for m in [*torch_model.convs, *torch_model.dense, torch_model.head]]
    thresholded = [layer for layer in model.layers if layer.kind != bnn.DENSE_OUT]
    assert len(bns) == len(thresholded)
    for layer, bn in zip(thresholded, bns, strict=True):
        gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
        ratios = bnn.norm_ratios(layer)
        q = max(abs(b / g) for g, b in zip(gamma, beta, strict=True) if g != 0) / 127
        for r, g, b in zip(ratios, gamma, beta, strict=True):
            if g == 0:
                assert r is None
            else:
                assert abs(r - b / g) <= q / 2 + 1e-9
    assert any(r is None for r in bnn.norm_ratios(thresholded[0]))  # a seventh of gammas are 0


def test_a_damaged_norm_is_refused_and_a_dense_out_has_none(tiny_model):
    model = bnn.read_bnn(tiny_model[1])
    layer = model.layers[1]
    bad = layer.replaced(norm=b"\xff\xff\xff\x7f" + layer.norm[4:])  # a NaN scale
    with pytest.raises(FormatError, match="NORM scale is not positive"):
        bnn._parse_layer(bnn.layer_payload(bad), 1)
    short = bnn.layer_payload(layer)[:-1]
    with pytest.raises(FormatError, match="expected"):
        bnn._parse_layer(short, 1)
    head = bytearray(bnn.layer_payload(model.layers[-1]))
    head[bnn._FLAGS_AT] = bnn.FLAG_NORM
    with pytest.raises(FormatError, match="unsupported flags"):
        bnn._parse_layer(bytes(head), len(model.layers) - 1)


def test_recalibrating_on_its_own_frames_again_changes_nothing(lively_tiny):
    """Each layer is re-estimated from the layers before it with their new thresholds: done a
    second time on the same frames it must give the same thresholds, bit for bit."""
    model = bnn.read_bnn(lively_tiny[1])
    x = box_inputs(300, model.input_shape[0])
    once_bytes, report = recalibrate(model, x)
    once = bnn.read_bnn(once_bytes)
    twice = bnn.read_bnn(recalibrate(once, x)[0])
    assert [a.thresholds for a in once.layers] == [b.thresholds for b in twice.layers]
    assert [a.thresholds for a in once.layers] != [b.thresholds for b in model.layers]
    # weights, flips and NORM untouched; the self-test scores are the new model's own
    for a, b in zip(model.layers, once.layers, strict=True):
        assert (a.weights, a.flips, a.norm) == (b.weights, b.flips, b.norm)
    assert once.meta["recalibrated"]["frames"] == 300
    assert once.meta["recalibrated"]["from"] == hashlib.sha256(lively_tiny[1]).hexdigest()
    assert report["frames"] == 300 and 0 <= report["decisions_changed"] <= 1
    assert sum(r["moved"] for r in report["layers"]) > 0


def test_frames_with_the_batchnorms_own_statistics_give_back_the_hosts_thresholds(lively_tiny):
    """The first layer's BatchNorm given exactly the statistics of the deployed accumulators
    on some frames: the host folds its thresholds from them, the device re-estimates them
    from the frames; the two agree up to NORM's int8 rounding (a sign or pooling slip in the
    re-estimate moves them by whole standard deviations)."""
    from host.pack import pack_model

    torch_model = copy.deepcopy(lively_tiny[0])
    model = bnn.read_bnn(lively_tiny[1])
    x = box_inputs(300, model.input_shape[0])
    p = _Prepared(model.layers[0])
    acc = _accumulators(p, x).reshape(-1, model.layers[0].cout)  # pooled, as BatchNorm sees
    m, v = acc.mean(axis=0), acc.var(axis=0)
    stem = torch_model.stem.conv
    a = (stem.weight.detach().abs().flatten(1).amax(1).double() / 127 / 255).numpy()
    b = stem.bias.detach().double().numpy()
    bn = torch_model.convs[0].bn
    bn.running_mean = torch.tensor(a * m + b, dtype=torch.float32)
    bn.running_var = torch.tensor(a * a * v, dtype=torch.float32)
    host = bnn.read_bnn(pack_model(checkpoint_for("tiny"), torch_model))
    device = bnn.read_bnn(recalibrate(host, x)[0])
    t_host = np.frombuffer(host.layers[0].thresholds, "<i4").astype(float)
    t_device = np.frombuffer(device.layers[0].thresholds, "<i4").astype(float)
    ratios = bnn.norm_ratios(host.layers[0])
    q = max(abs(r) for r in ratios if r is not None) / 127
    live = [c for c, r in enumerate(ratios) if r is not None and v[c] > 0]
    assert len(live) >= len(ratios) // 2
    eps = torch_model.convs[0].bn.eps
    for c in live:
        # int8 rounding of beta/gamma (at most q/2 standard deviations), the eps / a**2 the
        # device leaves out (tiny in trained models: docs/training-notes.md), and ceil
        dropped = abs(ratios[c]) * (np.sqrt(v[c] + eps / a[c] ** 2) - np.sqrt(v[c]))
        assert abs(t_device[c] - t_host[c]) <= q / 2 * np.sqrt(v[c]) * 1.001 + dropped + 1, c
    assert (first_layer_bits(device, x) == first_layer_bits(host, x)).mean() >= 0.99


def test_a_brighter_lamp_is_undone_at_the_first_layer(lively_tiny):
    """Pixels 60 brighter move every first-layer accumulator by a per-channel constant (away
    from the borders): re-estimated on the bright frames, the first layer's bits match what
    it computed on the dim ones far better than the unchanged model does."""
    model = bnn.read_bnn(lively_tiny[1])
    x = (box_inputs(300, model.input_shape[0]).astype(np.int32) * 180 // 255).astype(np.uint8)
    bright = x + np.uint8(60)
    on_dim = bnn.read_bnn(recalibrate(model, x)[0])
    on_bright = bnn.read_bnn(recalibrate(model, bright)[0])
    reference = first_layer_bits(on_dim, x)
    kept = (first_layer_bits(on_dim, bright) == reference).mean()
    adapted = (first_layer_bits(on_bright, bright) == reference).mean()
    assert adapted >= 0.9 and adapted - kept >= 0.05, (kept, adapted)


def test_too_few_frames_or_no_norm_is_a_clear_error(lively_tiny):
    model = bnn.read_bnn(lively_tiny[1])
    with pytest.raises(BinsortError, match="too few"):
        recalibrate(model, box_inputs(50, model.input_shape[0]))
    plain = bnn.BnnModel(
        model.meta, [layer.replaced(norm=None) for layer in model.layers], [], b"\0" * 32
    )
    with pytest.raises(BinsortError, match="no NORM"):
        recalibrate(plain, box_inputs(200, model.input_shape[0]))


# -- on a device --------------------------------------------------------------------------------


def fill_ring(ring: str, model, n_per_label: int, skew_to=None) -> None:
    """Captures as the daemon writes them (edge.line.capture): model inputs of rendered
    boxes, each decided as its own code (`skew_to`: every box decided as that label)."""
    from edge.engine.numpy_engine import NumpyEngine

    cap = CaptureRing(ring, max_mb=64.0, min_free_mb=0.0)
    size = model.input_shape[0]
    x = box_inputs(n_per_label * 4, size, seed=11)
    scores = NumpyEngine(model).scores(x)
    info = {"labels": model.labels, "model_id": "m", "version": 1, "sha256": "0" * 64}
    for i, (image, s) in enumerate(zip(x, scores, strict=True)):
        probs = np.zeros(len(model.labels))
        probs[model.labels.index(skew_to) if skew_to else i % 4] = 1.0
        decision = types.SimpleNamespace(
            label="x", confidence=1.0, lane="left", why=None, probs=probs, first=i, last=i
        )
        while not cap.offer(decision, (i, (image, s, None)), info):
            time.sleep(0.002)  # the writer is behind: offer again
    cap.close()


@pytest.fixture(scope="module")
def rings(tmp_path_factory, lively_tiny):
    """Capture rings written once for the module (each capture is synced: seconds a ring):
    `even`, 50 boxes of each code; `skewed`, those and then 100 more all decided F06."""
    root = tmp_path_factory.mktemp("rings")
    model = bnn.read_bnn(lively_tiny[1])
    fill_ring(str(root / "even"), model, 50)
    shutil.copytree(root / "even", root / "skewed")
    fill_ring(str(root / "skewed"), model, 25, skew_to="F06")
    return root


@pytest.fixture()
def device(tmp_path, lively_tiny, rings):
    """A store running the lively tiny model (confirmed) and a ring of 200 of its boxes."""
    from tests.shipkit import keys

    key, pub = keys(tmp_path / "k")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    station = {"key": key, "store": store, "payload": lively_tiny[1], "tmp": tmp_path}
    install(station, 1)
    s = SlotStore(store)
    s.begin_trial()
    s.commit_trial("healthy")
    ring = str(tmp_path / "store" / "captures")
    shutil.copytree(rings / "even", ring)
    return station, ring


def edge_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_recalibrate_installs_on_trial_and_undo_goes_back(device):
    station, ring = device
    store = SlotStore(station["store"])
    before, rec = store.active()
    proc = edge_cli("recalibrate", "--store", station["store"], "--frames", "200", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["frames"] == 200 and set(report["per_label"].values()) == {50, 0}
    slot, now = store.active()
    assert slot != before and store.trial()["slot"] == slot
    assert now["recalibrated_from"] == rec["sha256"] and now["version"] == rec["version"]
    assert now["sha256"] == report["sha256"] and now["manifest"] is None
    made = bnn.read_bnn_file(store.model_path(slot))
    assert made.meta["recalibrated"]["from"] == rec["sha256"]
    # a delta for the model it was made from still applies (to that model, in the other slot)
    assert store.state()["floor"] == 1
    proc = edge_cli("recalibrate", "--store", station["store"], "--undo")
    assert proc.returncode == 0, proc.stderr
    assert store.active()[0] == before and store.trial() is None
    proc = edge_cli("recalibrate", "--store", station["store"], "--undo")
    assert proc.returncode == 2 and "not a recalibration" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_recalibrate_refuses_too_few_frames_and_a_dry_run_installs_nothing(device, tmp_path):
    station, ring = device
    store = SlotStore(station["store"])
    before = store.active()[0]
    proc = edge_cli("recalibrate", "--store", station["store"], "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and store.active()[0] == before
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = edge_cli("recalibrate", "--store", station["store"], "--captures", str(empty))
    assert proc.returncode == 2 and "needs at least 200" in proc.stderr
    assert proc.stderr.count("\n") == 1 and store.active()[0] == before
    proc = edge_cli("recalibrate", "--store", station["store"], "--frames", "20")
    assert proc.returncode == 2 and "at least 200" in proc.stderr
    proc = edge_cli("recalibrate", "--store", station["store"], "--captures", str(tmp_path / "no"))
    assert proc.returncode == 2 and "cannot read the capture folder" in proc.stderr
    from tests.shipkit import keys

    SlotStore.init(str(tmp_path / "bare"), [keys(tmp_path / "k2")[1]])
    proc = edge_cli("recalibrate", "--store", str(tmp_path / "bare"))
    assert proc.returncode == 2 and "no active model" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_frames_are_balanced_by_the_decided_label(rings, lively_tiny):
    model = bnn.read_bnn(lively_tiny[1])
    ring = str(rings / "skewed")  # 50 boxes of each code, then 100 more decided F06
    images, counts = recalibration.balanced_frames(ring, model.labels, 32, 32, 320)
    # 80 of each label the ring holds (no box was decided empty), the newest first
    assert counts == {"F06": 80, "K11": 50, "S19": 50, "V22": 50, "empty": 0}
    assert len(images) == 230


def test_a_delta_for_the_model_a_recalibration_came_from_is_admitted(device, lively_tiny):
    """The host knows the model it shipped, not the device's recalibration of it: a delta of
    the shipped model applies to that model (kept in the other slot) and replaces the
    recalibration."""
    from host.pack import pack_model

    station, _ = device
    store = SlotStore(station["store"])
    recalibration.recalibrate_store(store, os.path.join(station["store"], "captures"), 200)
    store.begin_trial()
    store.commit_trial("healthy")
    torch_model, base = lively_tiny
    changed = copy.deepcopy(torch_model)
    with torch.no_grad():
        changed.head.linear.bias.add_(0.5)
    new = pack_model(checkpoint_for("tiny"), changed, 2)
    update = write_delta(base, [(new, None)])
    path = station["tmp"] / "u.bsd"
    path.write_bytes(update)
    shipped = hashlib.sha256(base).hexdigest()
    manifest = store.verify(signed_manifest(update, station["key"], 2, kind="delta", base=shipped))
    slot = store.install(manifest, str(path))
    with open(store.model_path(slot), "rb") as f:
        assert f.read() == new


def test_the_daemon_recalibrates_on_schedule_and_trials_the_result(device):
    station, ring = device
    with pytest.raises(BinsortError, match="needs \\[capture\\]"):
        config(station["store"], recalibrate={"every_h": 24})
    cfg = config(
        station["store"],
        capture={"dir": ring, "min_free_mb": 0.0},
        recalibrate={"every_h": 24, "frames": 200},
    )
    daemon = Daemon(cfg, record_truth=True)
    before = SlotStore(station["store"]).active()[1]["sha256"]
    assert daemon.recalibrate_now()
    assert daemon.recalibrate_now() is False  # the first is on trial: not stacked on it
    assert "skipped: a model is on trial" in daemon.events[-1]["event"]
    run_sim(daemon)
    status = daemon.status()
    assert status["recalibration"]["frames"] == 200
    active = SlotStore(station["store"]).active()[1]
    assert active["recalibrated_from"] == before
    assert status["model"]["recalibrated"]["frames"] == 200
    assert SlotStore(station["store"]).trial() is None  # confirmed after its trial boxes


def test_a_delta_carries_norm_when_it_changes(lively_tiny):
    """A base packed before NORM (format 1.1) updated to one with it: the delta carries NORM
    records and makes exactly the packed file; the same NORM travels in none."""
    _, data = lively_tiny
    model = bnn.read_bnn(data)
    plain_layers = [layer.replaced(norm=None) for layer in model.layers]
    old = bnn.write_bnn(model.meta, plain_layers, model.golden, model.golden_seed)
    update = write_delta(old, [(data, None)])
    assert apply_delta(old, update).data == data
    ops = [r for r in _layr_ops(update)]
    assert sum(op == NORM for op in ops) == sum(1 for la in model.layers if la.kind in (2, 3))
    assert NORM not in _layr_ops(write_delta(data, [(data, None)]))


def _layr_ops(delta: bytes) -> list:
    import struct

    from protocol.delta import OP_HEAD, _records

    return [struct.unpack_from(OP_HEAD, p)[1] for tag, p, _, _ in _records(delta) if tag == b"LAYR"]


def test_an_edge_config_checks_the_schedule(tmp_path):
    base = {
        "model": {"store": str(tmp_path)},
        "source": {"url": "sim:"},
        "lanes": {"reject": "reject", "map": {"F06": "left"}},
        "capture": {"keep": "all"},
    }
    cfg = check_config(dict(base, recalibrate={"every_h": 12}))
    assert cfg["recalibrate"] == {"every_h": 12.0, "frames": 1000}
    with pytest.raises(BinsortError, match="every_h must be positive"):
        check_config(dict(base, recalibrate={"every_h": 0}))
    with pytest.raises(BinsortError, match="at least 200"):
        check_config(dict(base, recalibrate={"every_h": 1, "frames": 10}))
    with pytest.raises(BinsortError, match='keep = "all"'):
        check_config(dict(base, capture={"keep": "doubtful"}, recalibrate={"every_h": 1}))


def test_sidecars_that_cannot_be_read_are_skipped(tmp_path):
    """The ring's sidecars are the device's own, but a card can garble them: one that is not
    JSON, or JSON nested past the parser's recursion limit, is passed over, not a crash."""
    good = {"label": "F06"}
    (tmp_path / "00000001-20261204T010000Z.json").write_text(json.dumps(good))
    (tmp_path / "00000002-20261204T010001Z.json").write_bytes(b"[" * 5000 + b"]" * 5000)
    (tmp_path / "00000003-20261204T010002Z.json").write_bytes(b"\x00\xff")
    assert recalibration._sidecars(str(tmp_path)) == [("00000001-20261204T010000Z", good)]

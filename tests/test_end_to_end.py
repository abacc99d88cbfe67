"""Synthesise -> train -> pack -> classify on the edge engine, through the real CLI."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_trains_packs_and_the_edge_engine_computes_exactly_the_host_reference(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "host.cli",
            "demo",
            "--arch",
            "tiny",
            "--count",
            "100",
            "--epochs",
            "3",
            "--boxes",
            "12",
            "--out",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 100  # 20 test images for each of 5 labels
    assert report["edge_equals_host_reference"] is True
    assert report["label_agreement_with_float_model"] >= 0.99
    assert report["size_ratio"] > 10
    assert sum(map(sum, report["confusion"])) == report["n"]
    # an untrained tiny net on the line: the daemon runs and every box gets an answer or is
    # counted as missed; nothing crashes
    assert report["boxes"] == 12 and report["versions_used"]
    assert {"sorted_right", "late", "early", "wrong_diverter", "boxes_per_minute"} <= set(report)
    assert (tmp_path / "run" / "metrics.json").exists() and (
        tmp_path / "run" / "curves.png"
    ).exists()


class _Drawn(Exception):
    pass


def test_the_demo_on_its_defaults_draws_3000_images_per_label_in_every_style_for_24_epochs(
    monkeypatch, tmp_path
):
    """What `binsort demo` draws and trains on its built-in defaults, read where it is decided,
    without drawing: the slow test below runs the same demo for fewer epochs to keep the suite
    within its 15 minutes, so this is what holds the defaults themselves."""
    from edge.imaging.code_styles import STYLES
    from host import demo
    from host.archs import DEFAULT_ARCH, synth_code_height, synth_size

    seen = {}

    def synthesise(data_dir, **kwargs):
        seen.update(kwargs)

    def train(data_dir, run_dir, config, **kwargs):
        seen["config"] = config
        raise _Drawn

    monkeypatch.setattr(demo, "synthesise", synthesise)
    monkeypatch.setattr(demo, "train", train)
    with pytest.raises(_Drawn):
        demo.run_demo(str(tmp_path), quiet=True)
    assert seen["count"] == 3000 and seen["seed"] == 0
    assert seen["styles"] == tuple(STYLES)
    assert seen["size"] == synth_size(DEFAULT_ARCH) == 150
    assert seen["code_height"] == synth_code_height(DEFAULT_ARCH)
    assert seen["config"].arch == DEFAULT_ARCH == "bcnn144" and seen["config"].epochs == 24


# The demo's test trains for two thirds of the demo's 24 epochs: on the demo's defaults it
# took 582-613 s of a suite that went past its 15 minutes (2026-12-04); at 16 epochs the demo
# took 443 s alone against 554 s at 24 the same hour. At 12 the net is still far from trained
# (0.701 of the images, 0.71 of the boxes sorted right); the defaults themselves are held by
# the test above (docs/training-notes.md section 5, thirty-eighth round).
DEMO_TEST_EPOCHS = 16


@pytest.mark.slow(alone=True)
def test_demo_on_its_default_data_and_net_reads_the_styled_codes_and_sorts_the_line(tmp_path):
    """The main job on the demo's data and net (bcnn144 on 3,000 styled synthetic images per
    label), trained for DEMO_TEST_EPOCHS epochs.

    Measured on 2 cores at 16 epochs (docs/training-notes.md section 5, thirty-eighth round):
    0.886 of the styled test images, 0.917 from nine views, all 300 boxes on the line sorted
    right and none late, the demo 443 s alone. At the demo's own 24 epochs the same hour: 0.917
    and 0.949 in 554 s (earlier rounds: 0.908-0.923 on synth-8 to synth-13). Issue 15's target
    for the default model, 0.995 on its own test set, is not met; the floors here catch a
    regression, they claim nothing."""
    from host.models import DEFAULT_ARCH

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "host.cli",
            "demo",
            "--epochs",
            str(DEMO_TEST_EPOCHS),
            "--out",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=2700,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["arch"] == DEFAULT_ARCH and report["n"] == 3000
    assert report["image_accuracy"] >= 0.85  # 3.6 points under the measured
    # nine shifted and turned views of each image: 0.917 at 16 epochs (0.943-0.949 at 24)
    assert report["views"] == 9 and report["image_accuracy_views"] >= 0.88
    assert report["boxes"] == 300 and report["missed"] == 0 and report["double"] == 0
    assert report["accuracy"] >= max(0.98, report["image_accuracy"])
    # and physically: every diverter on its box as the box passed it (issue 18)
    assert report["belt_speed_mps"] == 0.5 and report["boxes_per_minute"] > 0
    assert report["late"] == report["early"] == report["wrong_diverter"] == 0
    assert report["sorted_right"] == report["lane_right"] >= 0.98
    assert report["versions_used"] == [1, 2] and report["swap_missed"] == 0
    assert report["transfer_seconds"] > 0 and report["latency_ms_p99"] > 0
    assert report["size_ratio"] >= 25  # 23.8x with two stored 96x96 self-test images; 29.8x seeded
    assert report["edge_equals_host_reference"] is True
    assert report["label_agreement_with_float_model"] >= 0.995
    # tier 0 (issue 19): a washed-out camera costs the model over 5 points; its thresholds
    # re-estimated from 1,200 unlabelled washed-out frames bring most of them back. The
    # issue's bar, within 1.5 points, is met by the default model (0.978, washed out 0.821,
    # recalibrated on 1,000 frames 0.973); this smaller demo model landed 0.4 and 1.7 points
    # short in two runs (docs/training-notes.md section 6); the
    # bcnn144 demo model: 0.967, washed out 0.871, recalibrated 0.969 (thirteenth round); on
    # synth-8: 0.926, washed out 0.771, recalibrated 0.910 (section 5, eighteenth round); on
    # synth-9: 0.921, 0.801, 0.917; on synth-10: 0.905, 0.784, 0.895 (nineteenth round); on
    # synth-11: 0.905, 0.798, 0.897 (twentieth round); on synth-12: 0.908, 0.797, 0.885
    # (twenty-first round). Over these eight runs it landed from 0.2 points over to 2.3 under
    # the plain frames, each run one draw of a model; the floor, 3 points under, sits outside
    # that spread (it was 2.5 until synth-12's 2.3) and still asks for most of the loss back.
    # At 16 epochs on synth-13: 0.875, washed out 0.714, recalibrated 0.859 (1.7 under; 24
    # epochs the same hour: 0.909, 0.763, 0.907; thirty-eighth round)
    plain, washed, recalibrated = washed_out_and_recalibrated(tmp_path)
    assert plain - washed >= 0.05 and recalibrated >= plain - 0.03, (plain, washed, recalibrated)


def washed_out_and_recalibrated(out) -> tuple:
    """Accuracy of the demo's model on its test images, on them washed out (contrast 0.3,
    black at 150: a brighter lamp with the exposure locked), and on them washed out after
    tier 0 on 1,200 of its training images washed out, labels unused (every second test
    image, every tenth training image)."""
    import numpy as np

    from edge.engine import make_engine
    from edge.engine.recalibrate import recalibrate
    from edge.imaging.imagefolder import labelled_images
    from edge.imaging.preprocess import load_inputs
    from protocol import bnn

    model = bnn.read_bnn_file(str(out / "model.bnn"))
    h, w = model.input_shape

    def images(split, every=1):
        labels, items = labelled_images(str(out / "data" / split))
        items = items[::every]
        x = load_inputs([p for p, _ in items], h, w)
        return x, np.array([model.labels.index(labels[i]) for _, i in items])

    def washed_out(x):
        return np.round(x * 0.3 + 150).astype(np.uint8)

    x, y = images("test", every=2)
    frames, _ = images("train", every=10)
    adapted = bnn.read_bnn(recalibrate(model, washed_out(frames))[0])
    accuracy = [
        float((make_engine(m).classify(im)[0] == y).mean())
        for m, im in ((model, x), (model, washed_out(x)), (adapted, washed_out(x)))
    ]
    return tuple(accuracy)


@pytest.mark.slow
def test_training_runs_under_torchrun_with_two_gloo_processes(tmp_path):
    from host.synth import synthesise

    synthesise(str(tmp_path / "data"), count=20, seed=2, workers=1)
    scratch = tmp_path / "tmp"  # torchrun's own folder, which it leaves behind, goes here
    scratch.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "-m",
            "host.cli",
            "train",
            "--data",
            str(tmp_path / "data"),
            "--arch",
            "tiny",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["epochs"]) == 1
    assert (tmp_path / "run" / "checkpoint.pt").exists()

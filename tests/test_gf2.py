"""The GF(2) weight code of issue 20's study (host.gf2): seeded taps, XOR decoding, training
through it (tools/gf2-study)."""

import json
import subprocess
import sys

import numpy as np
import torch

from host.gf2 import Gf2Weight, apply_code, code_taps, decode_bits
from host.models import BinaryNet
from tests.shipkit import ROOT


def test_taps_are_distinct_in_range_and_fixed_by_the_seed():
    taps = code_taps(7, 2, 5000, 40, 3)
    assert taps.shape == (5000, 3) and int(taps.min()) >= 0 and int(taps.max()) < 40
    rows = taps.tolist()
    assert all(len(set(r)) == 3 for r in rows)  # x XOR x = 0 would pin a weight
    assert torch.equal(taps, code_taps(7, 2, 5000, 40, 3))
    assert not torch.equal(taps, code_taps(8, 2, 5000, 40, 3))
    # every index is drawn about as often (the draw without replacement is not biased)
    counts = np.bincount(taps.flatten().numpy(), minlength=40)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()


def test_the_signs_training_sees_are_the_xor_of_the_coefficient_bits():
    taps = code_taps(0, 0, 300, 150, 2)
    z = torch.randn(150, requires_grad=True)
    w = Gf2Weight(taps, (3, 100), "ste", 1.0)(z)
    bits = decode_bits((z < 0).to(torch.int64), taps)  # sign -1 is bit 1
    assert torch.equal(w.detach().flatten(), (1 - 2 * bits).to(w.dtype))
    by_hand = [int(z[a] < 0) ^ int(z[b] < 0) for a, b in taps.tolist()]
    assert bits.tolist() == by_hand
    w.sum().backward()
    assert z.grad.abs().sum() > 0  # the coefficients learn through the product


def test_a_net_with_the_code_has_fewer_trained_bits_and_still_runs():
    net = BinaryNet("tiny", 5)
    plain = sum(m.weight.numel() for m in list(net.convs) + list(net.dense))
    sizes = apply_code(net, 0.5, 2)
    assert sum(n for n, _ in sizes) == plain
    assert sum(k for _, k in sizes) == sum(-(-n // 2) for n, _ in sizes)
    out = net(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 5)


def test_the_study_tool_trains_through_the_code_and_reports_the_bits(trained_run, tmp_path):
    run = subprocess.run(
        [sys.executable, "tools/gf2-study", "--rate", "0.25", "--", "--data",
         str(trained_run / "data"), "--arch", "tiny", "--epochs", "1", "--out",
         str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["coefficient_bits"] * 4 >= report["binary_weights"]
    assert report["coefficient_bits"] < 0.26 * report["binary_weights"]
    assert 0 <= report["test_accuracy"] <= 1


def test_the_smooth_xor_computes_exact_signs_and_a_gradient_weighted_by_the_other_taps():
    taps = torch.tensor([[0, 1]])
    z = torch.tensor([0.5, -2.0], requires_grad=True)
    w = Gf2Weight(taps, (1,), "tanh", 1.0)(z)
    assert w.item() == -1.0  # sign(0.5) * sign(-2)
    w.sum().backward()
    t = torch.tanh(torch.tensor([0.5, -2.0]))
    expected = torch.stack([(1 - t[0] ** 2) * t[1], (1 - t[1] ** 2) * t[0]])
    assert torch.allclose(z.grad, expected)


def test_local_codes_keep_each_weights_taps_in_its_own_block():
    taps = code_taps(1, 0, 36, 20, 2, blocks=4)  # 4 kernels of 9 weights, 5 coefficients each
    for i, row in enumerate(taps.tolist()):
        assert all(i // 9 * 5 <= t < i // 9 * 5 + 5 for t in row) and row[0] != row[1]
    net = BinaryNet("tiny", 5)
    convs = [m.weight.shape for m in net.convs]
    sizes = apply_code(net, 0.5, 2, local="kernel")
    assert sizes[0][1] == convs[0][0] * convs[0][1] * 5  # ceil(0.5 * 9) a kernel
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 5)


def test_fitting_a_one_tap_code_takes_the_weighted_majority_of_each_coefficients_weights():
    from host.gf2 import fit_code

    target = torch.tensor([3.0, -1.0, -1.0, 0.5, -2.0, 1.0])
    taps = torch.tensor([[0], [0], [0], [1], [1], [1]])
    assert fit_code(target, taps, 2).tolist() == [1.0, -1.0]  # 3-1-1 > 0; 0.5-2+1 < 0
    # two taps: the search agrees with more of a random target than the all-ones start
    t = torch.randn(2000)
    taps2 = code_taps(0, 0, 2000, 1000, 2)
    z = fit_code(t, taps2, 1000)
    w = 1 - 2 * decode_bits((z < 0).to(torch.int64), taps2)
    assert float((w * t).sum()) > 0.3 * float(t.abs().sum())


def test_the_coded_runs_are_projected_into_bytes_on_the_wire(trained_run, tmp_path):
    """--project turns a study's coded runs into packed sizes (the plain net's .bnn with its
    weight bytes replaced by the coefficient bits); wire-curve --projected puts them on the
    wire axis beside real files."""
    from protocol import bnn

    base = tmp_path / "tiny.bnn"
    subprocess.run(
        [sys.executable, "-m", "host.cli", "pack", str(trained_run / "run"), "--out", str(base)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    model = bnn.read_model_file(str(base), bnn.read_bnn)
    plain = sum(la.weight_bytes() * 8 for la in model.layers if la.kind in (bnn.BCONV, bnn.BDENSE))
    runs = [
        {"group": "g", "kind": "plain", "label": "x1", "bits": plain, "accuracy": 0.9},
        {"group": "g", "kind": "gf2", "label": "R0.5", "bits": plain // 2, "accuracy": 0.8},
        {"group": "g", "kind": "gf2", "label": "R0.25", "bits": plain // 4, "accuracy": 0.7},
        {"group": "other", "kind": "gf2", "label": "R0.5", "bits": 999, "accuracy": 0.5},
    ]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    rows_path = tmp_path / "rows.json"
    out = subprocess.run(
        [sys.executable, "tools/gf2-study", "--plot", str(tmp_path / "runs.json"), "--out",
         str(tmp_path / "c.png"), "--project", str(base), "--rows", str(rows_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(rows_path.read_text())
    size = base.stat().st_size
    assert [(r["point"], r["bytes"]) for r in rows] == [
        ("R0.25", size - plain // 8 + plain // 32),
        ("R0.5", size - plain // 8 + plain // 16),
    ]
    # the plain net itself, projected: it must cost what the real file costs on the wire
    same = {"model": "same", "kind": "bnn", "point": "x1", "bytes": size, "accuracy": 0.9}
    rows_path.write_text(json.dumps(rows + [same]))
    curve = subprocess.run(
        [sys.executable, "tools/wire-curve", str(base), "--projected", str(rows_path), "--data",
         str(trained_run / "data" / "test"), "--out", str(tmp_path / "w")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert curve.returncode == 0, curve.stderr
    got = json.loads((tmp_path / "w.json").read_text())
    real, *projected, again = got
    assert not real.get("projected") and [r["projected"] for r in projected] == [True, True]
    assert again["projected"] and abs(again["wire_bytes"] - real["wire_bytes"]) <= 32
    # the same session costs for a real file and a projected one: a smaller payload, fewer bytes
    assert all(
        real["wire_bytes"] - real["bytes"] > r["wire_bytes"] - r["bytes"] > 0 for r in projected
    )
    assert [r["accuracy"] for r in projected] == [0.7, 0.8]
    (tmp_path / "bad.json").write_text(json.dumps([{"model": "x", "bytes": -1}]))
    bad = subprocess.run(
        [sys.executable, "tools/wire-curve", str(base), "--projected", str(tmp_path / "bad.json"),
         "--data", str(trained_run / "data" / "test"), "--out", str(tmp_path / "b")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2 and "row 1 needs" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

"""tools/bench-engines runs and reports what docs/engines.md says it reports (timings are
not asserted: speed targets are read from its output, not tested)."""

import json
import subprocess
import sys

import pytest

from edge.engine import native
from tests.hidden_packages import env_without
from tests.shipkit import ROOT

TINY_RUN = ("--arch", "tiny", "--runs", "50")  # bench-engines on the tiny net, briefly


def tool(name: str, *args, env=None, timeout=600):
    """tools/NAME ARGS..., run with this Python from the project root."""
    cmd = [sys.executable, "tools/" + name] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_bench_engines_float_twins_pool_as_the_net_does():
    """bcnn144m pools by 3: the numpy float32 twin must pool 3x3 too (it is checked against
    torch's before anything is timed, and a mismatch is an error)."""
    out = tool(
        "bench-engines",
        "--arch",
        "bcnn144m",
        "--runs",
        "50",
        "--skip-numpy124",
        "--skip-onnxruntime",
        "--json",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["engine"] for r in json.loads(out.stdout)["rows"]}
    assert any(name.startswith("numpy float32") for name in rows), rows


def test_bench_engines_json_has_every_row_and_the_popcount_paths():
    out = tool("bench-engines", *TINY_RUN, "--skip-numpy124", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    rows = {r["engine"]: r for r in report["rows"]}
    best = native.popcount_path()
    assert report["popcount_path"] == best
    assert rows["binsort native"]["note"] == "%s popcount" % best
    if best != "scalar":
        assert rows["binsort native (scalar)"]["note"] == "scalar popcount"
    names = " | ".join(rows)
    for engine in ("binsort numpy", "torch float32", "numpy float32", "onnxruntime float32"):
        assert engine in names, names
    torch_row = next(r for name, r in rows.items() if name.startswith("torch float32"))
    for r in report["rows"]:
        assert r["arch"] == "tiny" and r["runs"] == 50
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        want = torch_row["median_ms"] / r["median_ms"]
        assert abs(r["ratio_vs_torch"] - want) <= 0.01 * want + 0.01
    peaks = report["popcount_peaks_gmacs_per_s"]
    assert set(peaks) == {best, "scalar"} and all(v > 0 for v in peaks.values())
    for path, info in report["binary_layers"]["tiny"].items():
        assert path in peaks and info["gmacs_per_s"] > 0
        want = 100 * info["gmacs_per_s"] / peaks[path]
        assert abs(info["percent_of_popcount_peak"] - want) < 0.2
    assert report["machine"] and report["numpy"] and report["torch"]
    assert "skipped" not in report


def test_bench_engines_refuses_to_run_without_its_onnxruntime_anchor(tmp_path):
    out = tool("bench-engines", *TINY_RUN, "--json", env=env_without(tmp_path, "onnxruntime"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr  # one line, no traceback
    assert "onnxruntime" in out.stderr and "'.[bench]'" in out.stderr
    assert "--skip-onnxruntime" in out.stderr


def test_bench_engines_names_an_anchor_skipped_on_request(tmp_path):
    out = tool(
        "bench-engines",
        *TINY_RUN,
        "--skip-numpy124",
        "--skip-onnxruntime",
        "--json",
        env=env_without(tmp_path, "onnxruntime"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["skipped"] == ["onnxruntime float32 (--skip-onnxruntime)"]
    assert not any(r["engine"].startswith("onnxruntime") for r in report["rows"])
    assert "SKIPPED anchor: onnxruntime" in out.stderr


def test_belt_sweep_reports_each_speed_and_the_fastest_that_sorts(tmp_path, lively_tiny_model):
    """An untrained model sorts badly; the tool's report is what is checked here."""
    model = tmp_path / "tiny.bnn"
    model.write_bytes(lively_tiny_model[1])
    out = tool("belt-sweep", model, "--speeds", "0.5,1", "--boxes", "6", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    runs = report["runs"]
    assert [r["belt_speed_mps"] for r in runs] == [0.5, 1.0] and report["latency_ms"] == 0
    for r in runs:
        assert r["boxes"] == 6 and 0 <= r["sorted_right"] <= 1 and r["boxes_per_minute"] > 0
        assert {"lane_right", "late", "early", "wrong_diverter", "missed", "double"} <= set(r)
    assert runs[1]["boxes_per_minute"] == pytest.approx(2 * runs[0]["boxes_per_minute"], 0.2)
    bad = tool("belt-sweep", model, "--speeds", "fast")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--speeds" in bad.stderr


def test_selftest_strength_compares_stored_and_seeded_inputs(tmp_path, lively_tiny_model):
    model = tmp_path / "tiny.bnn"
    model.write_bytes(lively_tiny_model[1])
    out = tool("selftest-strength", model, "--flips", "40", "--counts", "2,4", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["inputs"]: r for r in json.loads(out.stdout)["rows"]}
    assert set(rows) == {"rendered x2 (GOLD)", "seeded x2 (GSEE)", "seeded x4 (GSEE)"}
    assert rows["rendered x2 (GOLD)"]["bytes"] == 8 + 2 * (32 * 32 + 8 * 5)
    assert rows["seeded x4 (GSEE)"]["bytes"] == 12 + 4 * 8 * 5
    assert all(0 <= r["caught"] <= r["of"] == 40 for r in rows.values())


def test_bench_synth_times_the_generator_against_bicubic_turns_side_by_side():
    out = tool("bench-synth", "--sizes", "32,40", "--frames", "2", "--rounds", "1", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["generator"] == "binsort-synth-13"
    assert [r["size"] for r in report["rows"]] == [32, 40]
    for r in report["rows"]:
        assert r["frames"] == 2 and r["ms_per_frame"] > 0 and r["bicubic_ms_per_frame"] > 0
        want = r["ms_per_frame"] / r["bicubic_ms_per_frame"]
        assert abs(r["ratio"] - want) <= 0.01 * want + 0.002
    bad = tool("bench-synth", "--sizes", "big", timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--sizes" in bad.stderr


def test_bench_train_step_times_table_and_arithmetic_batches_side_by_side():
    out = tool("bench-train-step", "--arch", "tiny", "--steps", "2", "--rounds", "1", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["arch"] == "tiny" and report["batch"] == 64 and report["same_numbers"]
    assert [r["part"] for r in report["rows"]] == ["batch", "step"]
    for r in report["rows"]:
        assert r["arithmetic"] > 0 and r["tables"] > 0
        want = r["tables"] / r["arithmetic"]
        assert abs(r["ratio"] - want) <= 0.001 + 0.001 * want
    bad = tool("bench-train-step", "--arch", "huge", timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "huge" in bad.stderr
    bad = tool("bench-train-step", "--steps", "0", timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--steps" in bad.stderr

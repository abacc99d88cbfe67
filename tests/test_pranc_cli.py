"""PRANC from the command line: train --param pranc, pack to .pranc and .bnn, classify and eval
a stream or its prefix, the curve tool, and clean errors."""

import json
import subprocess
import sys

import pytest

from tests.test_cli import assert_clean_error, run

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.fixture(scope="module")
def pranc_run(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pranc")
    code, stdout, err = run(
        "train",
        "--data",
        str(trained_run / "data"),
        "--arch",
        "tiny",
        "--epochs",
        "2",
        "--param",
        "pranc",
        "--alphas",
        "400",
        "--chunks",
        "4",
        "--out",
        str(out / "run"),
        "--quiet",
    )
    assert code == 0, err
    code, stdout, err = run("pack", str(out / "run"), "--out", str(out / "m.pranc"))
    assert code == 0, err
    assert "800 bytes of alphas (400 alphas in 4 chunks)" in stdout
    code, stdout, err = run("pack", str(out / "run"), "--out", str(out / "m.bnn"))
    assert code == 0, err
    return out


def test_classify_a_stream_gives_the_same_scores_as_its_packed_bnn(pranc_run, trained_run):
    folder = str(trained_run / "data" / "test")
    rows = {}
    for name in ("m.pranc", "m.bnn"):
        code, out, err = run(
            "classify", "--model", str(pranc_run / name), folder, module="edge.cli"
        )
        assert code == 0, err
        rows[name] = [json.loads(line) for line in out.splitlines()]
    assert len(rows["m.pranc"]) == 15 and rows["m.pranc"] == rows["m.bnn"]


def test_eval_of_a_prefix_names_the_chunks_it_used(pranc_run, trained_run):
    data = (pranc_run / "m.pranc").read_bytes()
    folder = str(trained_run / "data" / "test")
    code, out, err = run("eval", "--model", str(pranc_run / "m.pranc"), "--data", folder, "--json")
    full = json.loads(out)
    assert code == 0 and full["stream"]["chunks"] == 4 and full["stream"]["of_chunks"] == 4
    assert full["stream"]["host_accuracy"] is not None
    cut = len(data) - 300  # inside the third or fourth chunk: two chunks are 400 bytes
    code, out, err = run(
        "eval", "--model", str(pranc_run / "m.pranc"), "--data", folder, "--prefix-bytes", str(cut)
    )
    assert code == 0, err
    assert "model: the first 2 of 4 chunks" in out or "model: the first 3 of 4 chunks" in out
    code, out, err = run(
        "eval", "--model", str(pranc_run / "m.pranc"), "--data", folder, "--prefix-bytes", "50"
    )
    assert_clean_error(code, err, "before its fixed part")


def test_curve_tool_writes_accuracy_for_every_chunk_boundary(pranc_run, trained_run):
    out = pranc_run / "curve"
    proc = subprocess.run(
        [
            sys.executable,
            ROOT + "/tools/pranc-curve",
            str(pranc_run / "m.pranc"),
            "--data",
            str(trained_run / "data" / "test"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((pranc_run / "curve.json").read_text())
    assert [r["chunks"] for r in rows] == [1, 2, 3, 4]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    assert rows == sorted(rows, key=lambda r: r["bytes"])
    assert all(r["host_accuracy"] == pytest.approx(r["accuracy"], abs=1e-4) for r in rows)
    assert rows[-1]["bytes"] < (pranc_run / "m.pranc").stat().st_size  # DONE follows
    assert (pranc_run / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("damage", ["cut", "flip", "magic"])
def test_damaged_stream_is_a_one_line_error(pranc_run, tmp_path, trained_run, damage):
    data = bytearray((pranc_run / "m.pranc").read_bytes())
    if damage == "cut":
        data = data[: len(data) - 30]
    elif damage == "flip":
        data[len(data) - 60] ^= 0x10
    else:
        data[:4] = b"BSPQ"
    bad = tmp_path / "bad.pranc"
    bad.write_bytes(bytes(data))
    folder = str(trained_run / "data" / "test")
    code, _, err = run("classify", "--model", str(bad), folder, module="edge.cli")
    assert_clean_error(code, err, "bad.pranc")


def test_stream_from_a_weight_trained_run_is_a_one_line_error(trained_run, tmp_path):
    code, _, err = run("pack", str(trained_run / "run"), "--out", str(tmp_path / "m.pranc"))
    assert_clean_error(code, err, "--param pranc")
    assert not (tmp_path / "m.pranc").exists()


def test_pranc_options_without_pranc_are_a_one_line_error(tmp_path):
    code, _, err = run("train", "--data", str(tmp_path), "--alphas", "10", "--out", str(tmp_path))
    assert_clean_error(code, err, "--param pranc")


def test_prefix_bytes_on_a_bnn_is_a_one_line_error(pranc_run, trained_run):
    code, _, err = run(
        "eval",
        "--model",
        str(pranc_run / "m.bnn"),
        "--data",
        str(trained_run / "data" / "test"),
        "--prefix-bytes",
        "100",
    )
    assert_clean_error(code, err, ".pranc and .bsc streams only")

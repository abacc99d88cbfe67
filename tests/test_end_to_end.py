"""Synthesise -> train -> pack -> classify on the edge engine, through the real CLI."""

import json
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
    assert (tmp_path / "run" / "metrics.json").exists() and (
        tmp_path / "run" / "curves.png"
    ).exists()

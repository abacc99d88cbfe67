"""From a bare machine to a station: `binsort-edge setup` and tools/install-pi, each run twice
(the second run changes nothing), under a --root folder standing in for the Pi's /."""

import json
import os
import subprocess

from edge.install.store import SlotStore
from edge.line.config import load_config
from tests.shipkit import EDGE, ROOT, keys


def setup(*args):
    proc = subprocess.run(EDGE + ["setup", *args], capture_output=True, text=True, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


def results(out: str) -> dict:
    return {s["step"]: s["result"] for s in json.loads(out)["steps"]}


def test_setup_makes_a_station_and_a_second_run_changes_nothing(tmp_path):
    _, pub = keys(tmp_path / "k")
    root = tmp_path / "root"
    code, out, err = setup("--root", str(root), "--trust", pub, "--json")
    assert code == 0, err
    assert results(out) == {
        "user": "skipped",
        "config": "changed",
        "store": "changed",
        "unit": "changed",
        "service": "skipped",
    }
    config = load_config(str(root / "etc/binsort/edge.toml"))
    assert config["model"]["store"] == "/var/lib/binsort"
    store = SlotStore(str(root / "var/lib/binsort"))
    assert len(store.summary()["trusted_keys"]) == 1
    unit = (root / "etc/systemd/system/binsort-edge.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[0].endswith("binsort-edge")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    code, out, err = setup("--root", str(root), "--trust", pub, "--json")
    assert code == 0 and set(results(out).values()) == {"ok", "skipped"}, out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before

    _, pub2 = keys(tmp_path / "k2")  # a second signing key joins
    code, out, err = setup("--root", str(root), "--trust", pub2, "--json")
    assert code == 0 and results(out)["store"] == "changed"
    assert len(SlotStore(str(root / "var/lib/binsort")).summary()["trusted_keys"]) == 2


def test_setup_stops_before_changing_anything_on_bad_input(tmp_path):
    root = tmp_path / "root"
    code, _, err = setup("--root", str(root))
    assert code == 2 and "needs --trust" in err and err.count("\n") == 1
    assert not root.exists()
    code, _, err = setup("--root", str(root), "--trust", str(tmp_path / "none.pub"))
    assert code == 2 and "none.pub" in err and not root.exists()
    _, pub = keys(tmp_path / "k")
    (root / "etc/binsort").mkdir(parents=True)
    (root / "etc/binsort/edge.toml").write_text("[model\nstore = 3\n")
    code, _, err = setup("--root", str(root), "--trust", pub)
    assert code == 2 and "edge.toml" in err and err.count("\n") == 1
    assert sorted(os.listdir(root)) == ["etc"] and not (root / "etc/systemd").exists()


def test_install_pi_puts_binsort_in_a_venv_and_sets_the_station_up_twice_alike(tmp_path):
    """tools/install-pi as on a Pi, less apt (this machine has no python3-picamera2) and with
    --root: the venv (system site packages), binsort with its edge and pi extras from this
    checkout, the command's link, then setup; the second run changes nothing."""
    _, pub = keys(tmp_path / "k")
    args = [
        os.path.join(ROOT, "tools", "install-pi"),
        "--no-apt",
        "--prefix", str(tmp_path / "venv"),
        "--bin-dir", str(tmp_path / "bin"),
        "--root", str(tmp_path / "root"),
        "--trust", pub,
    ]  # fmt: skip
    env = dict(os.environ, PIP_NO_INPUT="1")
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "unit     changed" in first.stdout and "store    changed" in first.stdout
    link = tmp_path / "bin" / "binsort-edge"
    assert os.readlink(link) == str(tmp_path / "venv" / "bin" / "binsort-edge")
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("binsort-edge ")
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "changed" not in second.stdout and "link:" not in second.stdout, second.stdout
    bad = subprocess.run(args[:1] + ["--frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --frobnicate" in bad.stderr

"""The systemd unit that supervises the daemon: valid, and sandboxed to what it needs."""

import os
import re
import shutil
import subprocess

import pytest

from tests.shipkit import ROOT

UNIT = os.path.join(ROOT, "edge", "line", "binsort-edge.service")


def test_the_unit_is_rated_safe_by_systemd_analyze(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze here (tools/setup-system installs systemd)")
    unit = tmp_path / "binsort-edge.service"
    shutil.copy(UNIT, unit)
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert level, out.stdout + out.stderr
    assert float(level.group(1)) <= 4.0, out.stdout


def test_the_unit_keeps_what_the_line_needs():
    with open(UNIT) as f:
        text = f.read()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "notify" and settings["WatchdogSec"] == "10"
    assert settings["StateDirectory"] == "binsort"  # the store, counters and captures
    assert (
        "dialout" in settings["SupplementaryGroups"] and "video" in settings["SupplementaryGroups"]
    )
    assert "PrivateDevices" not in settings and "DevicePolicy" not in settings  # camera, GPIO
    assert "AF_UNIX" in settings["RestrictAddressFamilies"]  # sd_notify
    assert "AF_INET" in settings["RestrictAddressFamilies"]  # receiver and status page

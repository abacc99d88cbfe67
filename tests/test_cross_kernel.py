"""The native kernel gives the numpy engine's scores when built for the original Pi Zero
(ARMv6, hard float, run on qemu's arm1176), ARMv7, AArch64 and this machine."""

import json
import os
import shutil
import subprocess

import pytest

from tests.shipkit import ROOT


def test_kernel_is_identical_on_armv6_armv7_aarch64_and_native():
    if not (shutil.which("arm-linux-gnueabihf-gcc") and shutil.which("qemu-arm-static")):
        pytest.skip(
            "no ARM cross compiler or qemu-user here (tools/setup-system installs them on Debian)"
        )
    out = subprocess.run(
        [os.path.join(ROOT, "tools", "cross-check-kernel"), "--images", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = json.loads(out.stdout)
    ran = {(r["target"], r.get("arch")): r["status"] for r in results if r["status"] != "skipped"}
    assert {t for t, _ in ran} >= {"native", "armv6", "armv7"}, results
    assert set(ran.values()) == {"identical"}, results
    assert out.returncode == 0

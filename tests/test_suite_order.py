"""The suite's own order (tests/conftest.py): in the README's two processes, the demo's test
must start when the other process is nearly done, or both slow down (README, the test command)."""

import subprocess
import sys

from tests.shipkit import ROOT


def collected() -> list:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_the_slow_tests_come_first_and_the_one_that_must_run_alone_last():
    ids = collected()
    assert ids[-1].endswith(
        "::test_demo_on_its_default_data_and_net_reads_the_styled_codes_and_sorts_the_line"
    )
    first = {i.split("::")[0] for i in ids[:4]}
    assert first == {"tests/test_ansible.py", "tests/test_end_to_end.py", "tests/test_numpy124.py"}
    assert len(ids) == len(set(ids)) > 500

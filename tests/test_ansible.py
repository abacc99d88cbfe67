"""tools/ansible/binsort-edge.yml, run for real: ansible-playbook (ansible-core from PyPI, the
dev extra) against three "stations" that are real sshd instances on 127.0.0.1 ports, each with
its own root folder standing in for its /. The first run provisions all three; the second
changes nothing."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from edge.install.store import SlotStore
from edge.line.config import load_config
from tests.conftest import start_sshd
from tests.shipkit import ROOT, keys

PLAYBOOK = os.path.join(ROOT, "tools", "ansible", "binsort-edge.yml")


def ansible_playbook() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    found = here if os.path.exists(here) else shutil.which("ansible-playbook")
    if not found:
        pytest.fail("ansible-playbook is missing: the dev extra installs ansible-core")
    return found


def recap(out: str) -> dict:
    """{host: {"ok": n, "changed": n, "failed": n, ...}} from a play recap."""
    rows = {}
    for host, counts in re.findall(r"^(station\d)\s*:\s*(.*)$", out, re.M):
        rows[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return rows


@pytest.mark.slow
def test_one_playbook_run_provisions_three_stations_and_a_second_changes_nothing(tmp_path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True
    )
    authorized = (tmp_path / "id.pub").read_text()
    wheel_dir = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), ROOT],
        check=True,
        capture_output=True,
    )
    wheel = next(wheel_dir.glob("binsort-*.whl"))
    _, pub = keys(tmp_path / "k")
    servers, lines, known = [], [], []
    try:
        for i in range(1, 4):
            d = tmp_path / ("station%d" % i)
            d.mkdir()
            proc, port, host_line = start_sshd(d, authorized)
            servers.append(proc)
            known.append(host_line)
            lines.append(
                "station%d ansible_port=%d binsort_prefix=%s binsort_bin_dir=%s binsort_root=%s"
                % (i, port, d / "venv", d / "bin", d / "root")
            )
        (tmp_path / "known_hosts").write_text("".join(known))
        ssh_args = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        (tmp_path / "inventory.ini").write_text(
            "[stations]\n"
            + "\n".join(lines)
            + "\n\n[stations:vars]\nansible_host=127.0.0.1\nansible_user=%s\n"
            "ansible_ssh_private_key_file=%s\nansible_ssh_common_args='%s'\n"
            "ansible_python_interpreter=/usr/bin/python3\nbinsort_python=/usr/bin/python3\n"
            "binsort_apt=false\n"
            "binsort_start=false\nbinsort_wheel=%s\nbinsort_trust=%s\n"
            % (
                os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name,
                tmp_path / "id",
                ssh_args % (tmp_path / "known_hosts"),
                wheel,
                pub,
            )
        )
        env = dict(
            os.environ,
            ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
            ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
        )
        env.pop("ANSIBLE_CONFIG", None)
        command = [ansible_playbook(), "-i", str(tmp_path / "inventory.ini"), PLAYBOOK]
        first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        rows = recap(first.stdout)
        assert sorted(rows) == ["station1", "station2", "station3"], first.stdout[-2000:]
        assert all(r["failed"] == 0 and r["changed"] >= 5 for r in rows.values()), rows
        for i in range(1, 4):
            d = tmp_path / ("station%d" % i)
            root = d / "root"
            assert load_config(str(root / "etc/binsort/edge.toml"))["model"]["store"]
            assert len(SlotStore(str(root / "var/lib/binsort")).summary()["trusted_keys"]) == 1
            unit = (root / "etc/systemd/system/binsort-edge.service").read_text()
            assert "ExecStart=%s run" % (d / "venv" / "bin" / "binsort-edge") in unit
            assert os.readlink(d / "bin" / "binsort-edge") == str(d / "venv/bin/binsort-edge")

        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        assert second.returncode == 0, second.stdout[-3000:]
        rows = recap(second.stdout)
        assert all(r["changed"] == 0 and r["failed"] == 0 for r in rows.values()), rows
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)

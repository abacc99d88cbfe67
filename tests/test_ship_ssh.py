"""Shipping over SSH to a real OpenSSH sshd on 127.0.0.1 (started here; installed by
tools/setup-system): pinned host keys, SFTP upload with resume, the install through the same
store checks, and clean errors for an unknown host key, a wrong key and a closed port."""

import os
import subprocess
import sys

import pytest

from edge.install.store import SlotStore
from protocol.errors import BinsortError
from protocol.session import RemoteError
from protocol.transports import ssh
from tests.conftest import free_port
from tests.shipkit import HOST, ROOT, NoBytes, keys, signed_manifest, snapshot

REMOTE = "%s -m edge.cli" % sys.executable


@pytest.fixture()
def device(tmp_path, tiny_model, sshd):
    key, pub = keys(tmp_path / "k")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    model = tmp_path / "tiny.bnn"
    model.write_bytes(tiny_model[1])
    d = sshd["dir"]
    url = "ssh://%s@127.0.0.1:%d%s" % (sshd["user"], sshd["port"], store)
    opts = {
        "ssh_key": str(d / "client_key"),
        "known_hosts": str(d / "known_hosts"),
        "remote_command": REMOTE,
        "reconnects": 0,
    }
    return {
        "url": url,
        "opts": opts,
        "key": key,
        "store": store,
        "model": str(model),
        "payload": tiny_model[1],
        "dir": d,
    }


def _ship_cli(dev, *extra, **opt_over):
    o = dict(dev["opts"], **opt_over)
    cmd = HOST + [
        "ship",
        dev["model"],
        "--to",
        dev["url"],
        "--key",
        dev["key"],
        "--quiet",
        "--ssh-key",
        o["ssh_key"],
        "--known-hosts",
        o["known_hosts"],
        "--remote-command",
        o["remote_command"],
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_ship_over_ssh_installs_through_the_store_checks(device):
    out = _ship_cli(device, "--version", "4")
    assert out.returncode == 0, out.stderr
    assert "installed tiny version 4 in slot a" in out.stdout
    state = SlotStore(device["store"]).summary()
    assert state["active"] == "a" and state["slots"]["a"]["version"] == 4
    assert state["partial"] == []
    # Version 3, not 4 again: a second ship of version 4 within the same second signs the same
    # manifest (its `created` is whole seconds) and is refused as a replay instead.
    older = _ship_cli(device, "--version", "3")
    assert older.returncode == 2 and "not newer than the active version 4" in older.stderr
    assert SlotStore(device["store"]).summary()["slots"]["a"]["version"] == 4


def test_ssh_upload_resumes_after_what_reached_the_device(device):
    payload = device["payload"]
    manifest = signed_manifest(payload, device["key"], 6)
    import hashlib

    sha = hashlib.sha256(payload).hexdigest()
    partial = os.path.join(device["store"], "partial", sha + ".ssh.partial")
    with open(partial, "wb") as f:  # an earlier upload got this far
        f.write(payload[:5000])
    seen = []
    opts = dict(device["opts"], progress=lambda acked, size: seen.append(acked))
    result = ssh.ship(device["url"], manifest, payload, opts)
    assert result["version"] == 6
    assert seen[0] == 5000 and seen[-1] == len(payload)


def test_ssh_rollback_to_the_other_slot_uploads_nothing(device, bcnn_model):
    tiny, other = device["payload"], bcnn_model[1]
    ssh.ship(device["url"], signed_manifest(tiny, device["key"], 1), tiny, device["opts"])
    ssh.ship(device["url"], signed_manifest(other, device["key"], 2), other, device["opts"])
    back = signed_manifest(tiny, device["key"], 1, rollback=True)
    result = ssh.ship(device["url"], back, NoBytes(len(tiny)), device["opts"])
    assert result["slot"] == "a" and result["version"] == 1
    state = SlotStore(device["store"]).summary()
    assert state["active"] == "a" and state["slots"]["a"]["rollback"] is True
    assert os.listdir(os.path.join(device["store"], "partial")) == []


def test_ssh_resumed_upload_with_bad_bytes_is_refused_and_thrown_away(device):
    payload = device["payload"]
    manifest = signed_manifest(payload, device["key"], 6)
    import hashlib

    sha = hashlib.sha256(payload).hexdigest()
    partial = os.path.join(device["store"], "partial", sha + ".ssh.partial")
    with open(partial, "wb") as f:
        f.write(b"\x00" * 5000)
    before = snapshot(device["store"])
    with pytest.raises(RemoteError, match="tampered payload"):
        ssh.ship(device["url"], manifest, payload, device["opts"])
    assert snapshot(device["store"]) == before and not os.path.exists(partial)
    assert ssh.ship(device["url"], manifest, payload, device["opts"])["version"] == 6


def test_ssh_manifest_from_an_untrusted_key_is_refused_before_the_upload(device, tmp_path):
    stranger, _ = keys(tmp_path / "stranger")
    manifest = signed_manifest(device["payload"], stranger, 6)
    before = snapshot(device["store"])
    with pytest.raises(RemoteError, match="does not trust"):
        ssh.ship(device["url"], manifest, device["payload"], device["opts"])
    assert snapshot(device["store"]) == before
    assert not any(
        n.endswith(".ssh.partial") for n in os.listdir(os.path.join(device["store"], "partial"))
    )


@pytest.mark.parametrize(
    "change,message",
    [
        ({"known_hosts": "empty_known_hosts"}, "unknown host key"),
        ({"ssh_key": "stranger_key"}, "authentication failed"),
        ({"remote_command": "/nonexistent/binsort-edge"}, "was not found on the device"),
    ],
)
def test_ssh_errors_are_one_line_with_status_2(device, change, message):
    over = {k: (str(device["dir"] / v) if k != "remote_command" else v) for k, v in change.items()}
    out = _ship_cli(device, **over)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert SlotStore(device["store"]).summary()["active"] is None


def test_ssh_files_that_are_not_keys_are_one_line_errors(device, tmp_path):
    """paramiko reads known_hosts and key files as UTF-8 text and lets UnicodeDecodeError
    (and, for a known_hosts line it cannot parse, InvalidHostKey) out of its own errors."""
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    odd_line = tmp_path / "odd_known_hosts"
    odd_line.write_text("[127.0.0.1]:22 ssh-rsa AAAA!!!notbase64\n")
    for over, message in (
        ({"known_hosts": str(binary)}, "cannot read known_hosts"),
        ({"known_hosts": str(odd_line)}, "cannot read known_hosts"),
        ({"ssh_key": str(binary)}, "cannot use ssh key"),
    ):
        out = _ship_cli(device, **over)
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert SlotStore(device["store"]).summary()["active"] is None


def test_ssh_closed_port_and_changed_host_key_are_named(device, sshd, tmp_path):
    with pytest.raises(BinsortError, match="cannot connect"):
        ssh.ship("ssh://u@127.0.0.1:%d/x" % free_port(), b"", b"", device["opts"])
    other = tmp_path / "other_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (tmp_path / "other_host.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text("[127.0.0.1]:%d %s %s\n" % (sshd["port"], kind, blob))
    with pytest.raises(BinsortError, match="does not match"):
        ssh.ship(device["url"], b"", b"", dict(device["opts"], known_hosts=str(wrong)))

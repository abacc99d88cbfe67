import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import torch

from edge.install.store import SlotStore
from host.models import BinaryNet
from host.pack import pack_model
from host.untrained import lively_net, untrained_checkpoint
from tests.shipkit import keys

LABELS = ["F06", "K11", "S19", "V22", "empty"]


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests first, but a test marked `slow(alone=True)` last of all.

    The README's suite runs in two processes (`-n 2`): the short tests share the two cores
    well, but the demo's test trains with two threads, and beside another process each of its
    steps waits on the slower thread (the demo took 961 s in a two-process run where it takes
    about 530 s alone, and the suite was no faster). Last, it starts when the other process
    has little or nothing left to do."""

    def order(item):
        mark = item.get_closest_marker("slow")
        if mark is None:
            return 1
        return 2 if mark.kwargs.get("alone") else 0

    items.sort(key=order)  # stable: otherwise in the order collected


def random_bn_model(arch: str, seed: int = 1) -> BinaryNet:
    """An untrained net whose BatchNorms have random statistics, including negative and zero
    gamma, so packing exercises flipped and constant thresholds."""
    torch.manual_seed(seed)
    return randomise_batchnorm(BinaryNet(arch, len(LABELS)))


def randomise_batchnorm(model):
    """Random BatchNorm parameters and statistics, a seventh of the gammas zero; eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.randn(n)
            m.weight.data[::7] = 0
            m.bias.data = torch.randn(n) * 0.5
            m.running_mean = torch.randn(n) * 3
            m.running_var = torch.rand(n) * 5 + 0.1
    return model.eval()


def lively_model(arch: str, seed: int = 1, classes: int = 5) -> BinaryNet:
    return lively_net(arch, seed, classes)


def checkpoint_for(arch: str) -> dict:
    return untrained_checkpoint(arch, LABELS, "test")


@pytest.fixture(scope="session")
def tiny_model():
    model = random_bn_model("tiny")
    return model, pack_model(checkpoint_for("tiny"), model)


@pytest.fixture(scope="session")
def bcnn_model():
    model = random_bn_model("bcnn")
    return model, pack_model(checkpoint_for("bcnn"), model)


@pytest.fixture(scope="session")
def lively_tiny_model():
    model = lively_model("tiny")
    return model, pack_model(checkpoint_for("tiny"), model)


@pytest.fixture(scope="session")
def lively_bcnn_model():
    model = lively_model("bcnn")
    return model, pack_model(checkpoint_for("bcnn"), model)


@pytest.fixture(scope="session")
def lively_default_model():
    """The default architecture (144x144 input) as the demo and `binsort train` make it."""
    from host.models import DEFAULT_ARCH

    model = lively_model(DEFAULT_ARCH)
    return model, pack_model(checkpoint_for(DEFAULT_ARCH), model)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny synthetic data set and a one-epoch tiny run on it (seconds, not minutes)."""
    from host.synth import synthesise
    from host.train import train

    root = tmp_path_factory.mktemp("run")
    synthesise(str(root / "data"), count=15, seed=3, workers=1)
    train(
        str(root / "data"),
        str(root / "run"),
        arch="tiny",
        epochs=1,
        progress=False,
        log=lambda s: None,
    )
    return root


def random_inputs(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


# -- a real OpenSSH sshd on 127.0.0.1 (installed by tools/setup-system) ---------------------

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_sshd() -> None:
    if not os.path.exists(SSHD):
        pytest.fail(
            "OpenSSH sshd is not installed: run tools/setup-system (the README's test command does)"
        )


def start_sshd(d, authorized: str):
    """A real sshd on a free 127.0.0.1 port, configured and keyed in folder `d`, letting in
    the public key text `authorized`: (process, port, known_hosts line)."""
    need_sshd()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True
    )
    (d / "authorized_keys").write_text(authorized)
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        "\n".join(
            [
                "Port %d" % port,
                "ListenAddress 127.0.0.1",
                "HostKey %s" % (d / "host_key"),
                "AuthorizedKeysFile %s" % (d / "authorized_keys"),
                "PidFile %s" % (d / "sshd.pid"),
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
            ]
        )
        + "\n"
    )
    if os.getuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE
    )
    host_pub = (d / "host_key.pub").read_text().split()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("sshd did not start: %s" % proc.stderr.read().decode())
    return proc, port, "[127.0.0.1]:%d %s %s\n" % (port, host_pub[0], host_pub[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    need_sshd()
    d = tmp_path_factory.mktemp("sshd")
    for name in ("client_key", "stranger_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    proc, port, known = start_sshd(d, (d / "client_key.pub").read_text())
    (d / "known_hosts").write_text(known)
    (d / "empty_known_hosts").write_text("")
    yield {"port": port, "dir": d, "user": user}
    proc.terminate()
    proc.wait(timeout=10)


# -- a device with a model store (the daemon and capture tests) ------------------------------


@pytest.fixture()
def station(tmp_path, tiny_model):
    key, pub = keys(tmp_path / "k")
    store = str(tmp_path / "store")
    SlotStore.init(store, [pub])
    payload = tiny_model[1]
    path = tmp_path / "m.bnn"
    path.write_bytes(payload)
    return {"key": key, "store": store, "payload": payload, "path": str(path), "tmp": tmp_path}


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path_factory, monkeypatch):
    """`binsort ship` appends to a deployment history under $XDG_STATE_HOME: the tests' own,
    never the home folder of whoever runs them (child processes inherit it)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "state"))

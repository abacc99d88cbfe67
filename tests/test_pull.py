"""`binsort data pull` from a real sshd on 127.0.0.1: captures arrive sorted by predicted label,
a person's corrections survive later pulls, a cut link resumes, and what the device sends is
checked: half-written, damaged or hostile captures never land in the folder."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from edge.imaging.imagefolder import dataset_splits
from edge.line.capture import CaptureRing
from edge.line.decide import Decision
from host.pull import pull
from protocol.errors import BinsortError
from tests.shipkit import ROOT

LABELS = ["F06", "K11", "S19", "V22", "empty"]
MODEL = {"model_id": "m", "version": 3, "sha256": "0" * 64, "labels": LABELS}


def fill_ring(root: str, count: int, full: bool = True) -> CaptureRing:
    """`count` captures of boxes labelled in turn F06, K11, S19, V22."""
    ring = CaptureRing(root, max_mb=64, full_frame=full, min_free_mb=0)
    rng = np.random.default_rng(0)
    for i in range(count):
        label = LABELS[i % 4]
        probs = [0.05] * 5
        probs[i % 4] = 0.8
        d = Decision(i, label, 0.8, 5, 10 * i, 10 * i + 4, 0.0, probs)
        d.lane = "left"
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        frame = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        ring.offer(d, (10 * i + 2, (pixels, [0.0] * 5, frame)), MODEL)
    ring.close()
    return ring


@pytest.fixture()
def device(tmp_path, sshd):
    d = sshd["dir"]
    store = tmp_path / "store"
    return {
        "url": "ssh://%s@127.0.0.1:%d%s" % (sshd["user"], sshd["port"], store),
        "opts": {"ssh_key": str(d / "client_key"), "known_hosts": str(d / "known_hosts")},
        "ring": str(store / "captures"),
        "out": str(tmp_path / "pulled"),
        "sshd": sshd,
    }


def pulled_images(out: str) -> dict:
    return {
        label: sorted(os.listdir(os.path.join(out, label)))
        for label in os.listdir(out)
        if not label.startswith(".")
    }


def test_captures_arrive_sorted_by_label_and_corrections_survive_the_next_pull(device):
    fill_ring(device["ring"], 8)
    counts = pull(device["url"], device["out"], device["opts"], log=lambda line: None)
    assert counts["pulled"] == 8 and counts["damaged"] == 0
    got = pulled_images(device["out"])
    assert sorted(got) == ["F06", "K11", "S19", "V22"] and all(len(v) == 2 for v in got.values())
    assert len(os.listdir(os.path.join(device["out"], ".captures"))) == 8
    assert len(os.listdir(os.path.join(device["out"], ".frames"))) == 8
    name = got["F06"][0]
    with open(os.path.join(device["out"], ".captures", name.replace(".pgm", ".json"))) as f:
        assert json.load(f)["probabilities"][0] == 0.8
    # a person says the first F06 is really a K11
    os.replace(*(os.path.join(device["out"], lb, name) for lb in ("F06", "K11")))
    again = pull(device["url"], device["out"], device["opts"], log=lambda line: None)
    assert again["pulled"] == 0 and again["already"] == 8
    got = pulled_images(device["out"])
    assert len(got["F06"]) == 1 and len(got["K11"]) == 3
    labels, train, test = dataset_splits(device["out"])  # the folder is training data as is
    assert labels == ["F06", "K11", "S19", "V22"] and len(train) + len(test) == 8


def edit_sidecar(ring: str, name: str, change) -> None:
    path = os.path.join(ring, name + ".json")
    with open(path) as f:
        meta = json.load(f)
    change(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def test_half_written_damaged_and_hostile_captures_never_land(device):
    fill_ring(device["ring"], 5)
    ring = device["ring"]
    names = sorted(f[:-5] for f in os.listdir(ring) if f.endswith(".json") and f != "ring.json")
    os.remove(os.path.join(ring, names[0] + ".json"))  # half written: no sidecar yet
    with open(os.path.join(ring, names[1] + ".pgm"), "r+b") as f:  # damaged on the card
        f.seek(20)
        f.write(b"\xff\x00")
    edit_sidecar(ring, names[2], lambda meta: meta.update(label="../../escape"))
    edit_sidecar(
        ring, names[3], lambda meta: meta["files"]["input"].update(name="../../../outside.pgm")
    )
    with open(os.path.join(ring, names[4] + ".json"), "wb") as f:  # past JSON's recursion limit
        f.write(b"[" * 5000 + b"]" * 5000)
    counts = pull(device["url"], device["out"], device["opts"], log=lambda line: None)
    assert counts["pulled"] == 1 and counts["damaged"] == 3
    assert pulled_images(device["out"]) == {"_unlabelled": [names[2] + ".pgm"]}
    assert not os.path.exists(os.path.join(os.path.dirname(device["out"]), "outside.pgm"))
    assert os.listdir(os.path.join(device["out"], ".partial")) == []


class CuttingProxy:
    """127.0.0.1 proxy to sshd that cuts each link after `limit` bytes towards the client;
    `once`: it takes one link, then nothing listens (the device went away)."""

    def __init__(self, port: int, limit: int, once: bool = False):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.upstream, self.limit, self.once = (
            self.listener.getsockname()[1],
            port,
            limit,
            once,
        )
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.once:
                self.listener.close()
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for args in ((client, server, None), (server, client, self.limit)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src, dst, limit):
        sent = 0
        try:
            while limit is None or sent < limit:
                data = src.recv(4096)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def url_and_known_hosts(self, device) -> "tuple[str, str]":
        sshd = device["sshd"]
        known = sshd["dir"] / ("known_hosts_%d" % self.port)
        key = (sshd["dir"] / "host_key.pub").read_text().split()
        known.write_text("[127.0.0.1]:%d %s %s\n" % (self.port, key[0], key[1]))
        return device["url"].replace(":%d/" % sshd["port"], ":%d/" % self.port), str(known)


FILES_BYTES = 6 * (32 * 32 + 13 + 160 * 160 * 3 + 15)  # six inputs and six frames


def test_a_link_cut_again_and_again_resumes_without_fetching_anything_twice(device):
    fill_ring(device["ring"], 6)
    url, known = CuttingProxy(device["sshd"]["port"], 150_000).url_and_known_hosts(device)
    lines = []
    opts = dict(device["opts"], known_hosts=known, reconnects=0)
    counts = pull(url, device["out"], opts, log=lines.append)
    assert counts["pulled"] == 6 and counts["bytes"] == FILES_BYTES
    assert [line for line in lines if line.startswith("link dropped")]
    assert sum(len(v) for v in pulled_images(device["out"]).values()) == 6


def test_a_device_gone_midway_is_one_line_then_the_same_command_resumes(device):
    fill_ring(device["ring"], 6)
    proxy = CuttingProxy(device["sshd"]["port"], 250_000, once=True)
    url, known = proxy.url_and_known_hosts(device)
    cmd = [sys.executable, "-m", "host.cli", "data", "pull", url, "--out", device["out"]]
    cmd += ["--ssh-key", device["opts"]["ssh_key"], "--known-hosts", known, "--quiet"]
    cut = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert cut.returncode == 2 and len(cut.stderr.strip().splitlines()) == 1, cut.stderr
    assert cut.stderr.startswith("binsort: error: the link to") and "run the same" in cut.stderr
    first = sum(len(v) for v in pulled_images(device["out"]).values())
    assert first < 6
    rest = pull(device["url"], device["out"], device["opts"], log=lambda line: None)
    assert rest["pulled"] == 6 - first and 0 < rest["bytes"] < FILES_BYTES
    assert sum(len(v) for v in pulled_images(device["out"]).values()) == 6


def test_remove_frees_the_ring_and_the_ring_counts_again(device):
    fill_ring(device["ring"], 4)
    counts = pull(device["url"], device["out"], dict(device["opts"], remove=True), print)
    assert counts["pulled"] == 4 and counts["removed"] == 4
    assert os.listdir(device["ring"]) == ["ring.json"]
    ring = CaptureRing(device["ring"], min_free_mb=0)
    ring.close()
    assert ring.summary()["bytes"] == 0


def test_an_unknown_host_or_a_folder_with_no_ring_is_one_line(device):
    with pytest.raises(BinsortError, match="no capture ring"):
        pull(device["url"], device["out"], device["opts"])
    opts = dict(device["opts"], known_hosts=str(device["sshd"]["dir"] / "empty_known_hosts"))
    with pytest.raises(BinsortError, match="unknown host key"):
        pull(device["url"], device["out"], opts)

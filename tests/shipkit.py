"""Helpers for the shipping tests: keys, stores, signed payloads, a receiver process."""

import hashlib
import json
import os
import subprocess
import sys
import time

from protocol import manifest as mf
from protocol.kinds import model_kind
from protocol.signing import load_private, new_key_pair, sign_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE = [sys.executable, "-m", "edge.cli"]
HOST = [sys.executable, "-m", "host.cli"]


def keys(path) -> "tuple[str, str]":
    return new_key_pair(str(path))


def signed_manifest(payload: bytes, key_path: str, version: int, **extra) -> bytes:
    kind = model_kind(payload) or "bnn"
    ends = extra.pop("ends", None) or mf.fixed_chunk_ends(len(payload))
    signed = {
        "format": mf.FORMAT,
        "model_id": extra.pop("model_id", "line-3"),
        "kind": kind,
        "version": version,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "chunks": mf.chunk_table(payload, ends, extra.pop("accuracies", None)),
        "created": 1790000000,
    }
    if extra.get("rollback"):  # a rollback must expire (edge/install/store.py)
        extra.setdefault("expires", int(time.time()) + 3600)
    signed.update(extra)
    return sign_manifest(signed, load_private(key_path))


def snapshot(store: str) -> dict:
    """What the slots hold: the state's slot records and active slot, and every slot file."""
    with open(os.path.join(store, "store.json")) as f:
        state = json.load(f)
    files = {}
    for slot in ("a", "b"):
        d = os.path.join(store, "slots", slot)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                files[slot + "/" + name] = hashlib.sha256(f.read()).hexdigest()
    return {"active": state["active"], "slots": state["slots"], "files": files}


class NoBytes:
    """A payload the sender must not read: only its length is known (a fleet rollback)."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        raise AssertionError("the sender read payload bytes the device already holds")


class Receiver:
    """`binsort-edge receive --listen tcp://127.0.0.1:0` in a child process."""

    def __init__(self, store: str, *extra):
        self.proc = subprocess.Popen(
            EDGE + ["receive", "--listen", "tcp://127.0.0.1:0", "--store", store, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        line = self.proc.stdout.readline()
        assert "port" in line, line
        self.port = int(line.rsplit("port ", 1)[1].split(")")[0])
        self.url = "tcp://127.0.0.1:%d" % self.port

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out


class Proxy:
    """tools/link-proxy in a child process; `endpoints` is its first JSON line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "link-proxy"), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.endpoints = json.loads(self.proc.stdout.readline())

    def stop(self) -> dict:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return json.loads(out.strip().splitlines()[-1])


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False

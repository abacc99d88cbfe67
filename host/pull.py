"""`binsort data pull`: a device's capture ring, over SFTP, into an image folder for a person to
correct and for `binsort train --data synth+DIR` to learn from.

    DIR/<predicted label>/<capture>.pgm   the model input of each box, sorted by its decision
    DIR/.captures/<capture>.json          the sidecar: decision, confidence, probabilities
    DIR/.frames/<capture>.frame.pgm|ppm   the whole camera frame, when the device kept it
    DIR/.pull.json                        what has been pulled from where
    DIR/.partial/                         downloads in progress

A person corrects a label by moving the image to another label folder; a later pull never
brings it back, because .pull.json remembers every capture taken. Only captures whose sidecar
exists are taken (the ring writes it last), each file is checked against the size and SHA-256
in the sidecar before it is moved into place, and a download cut off resumes where it stopped.
The device's files are untrusted input: names and labels are checked before they touch a path.
"""

import contextlib
import hashlib
import json
import os
import re
import stat

from edge.files import write_atomic
from edge.line.capture import CAPTURE_FORMAT, MARKER, NAME
from protocol.errors import BinsortError
from protocol.transports import ssh

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
BLOCK = 32768


def _capture_dir(sftp, path: str) -> str:
    """The ring at PATH, or at PATH/captures (the daemon's default beside its store)."""
    for where in (path, path + "/captures"):
        try:
            sftp.stat(where + "/" + MARKER)
            return where
        except OSError:
            continue
    raise BinsortError(
        "no capture ring at %s or %s/captures on the device (is [capture] set in its edge.toml, "
        "or has `binsort-edge capture --dir` run?)" % (path, path)
    )


def _check_sidecar(raw: bytes, name: str) -> dict:
    """The sidecar's fields that a path or a check depends on, or None when unusable."""
    try:
        meta = json.loads(raw)
        files = meta["files"]
        ok = (
            meta["format"] == CAPTURE_FORMAT
            and meta["name"] == name
            and isinstance(meta["label"], str)
            and isinstance(files, dict)
            and "input" in files
        )
        for role, f in files.items():
            ok = ok and role in ("input", "frame")
            ok = ok and isinstance(f["name"], str) and f["name"].split(".", 1)[0] == name
            ok = ok and f["name"].endswith((".pgm", ".ppm")) and "/" not in f["name"]
            ok = ok and isinstance(f["bytes"], int) and 0 < f["bytes"] <= 64 << 20
            ok = ok and isinstance(f["sha256"], str) and len(f["sha256"]) == 64
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return meta if ok else None


class Puller:
    def __init__(self, url: str, out: str, options: dict, log=print):
        self.url, self.out, self.options, self.log = url, out, options, log
        self.state_path = os.path.join(out, ".pull.json")
        self.counts = {"pulled": 0, "already": 0, "gone": 0, "damaged": 0, "removed": 0}
        self.counts["bytes"] = 0
        try:
            for sub in ("", ".captures", ".frames", ".partial"):
                os.makedirs(os.path.join(out, sub), exist_ok=True)
        except OSError as e:
            raise BinsortError("cannot write to %s: %s" % (out, e.strerror)) from None
        self.state = self._read_state()

    def _read_state(self) -> dict:
        if not os.path.exists(self.state_path):
            return {"format": "binsort-pull-1", "pulled": {}}
        try:
            with open(self.state_path) as f:
                state = json.load(f)
            if not isinstance(state.get("pulled"), dict):
                raise ValueError("no 'pulled' table")
        except (OSError, ValueError, AttributeError) as e:
            raise BinsortError(
                "%s is damaged (%s): move it away to pull everything again" % (self.state_path, e)
            ) from None
        return state

    def _save_state(self) -> None:
        write_atomic(self.state_path, json.dumps(self.state, indent=1).encode())

    def run(self) -> dict:
        """Pull until every capture on the device is here; a dropped link is reopened up to
        options['reconnects'] times in a row without progress."""
        import paramiko

        drops, dropped = 0, None
        while True:
            try:
                client = ssh.connect(self.url, self.options)
            except BinsortError as e:
                if dropped is None:
                    raise
                raise BinsortError(
                    "the link to %s dropped (%s) and does not come back: %s; what arrived is "
                    "kept: run the same command again to go on" % (self.url, dropped, e)
                ) from None
            before = self.counts["bytes"]
            try:
                self._pull_once(client)
                return self.counts
            except (OSError, EOFError, paramiko.SSHException) as e:
                drops = 0 if self.counts["bytes"] > before else drops + 1
                if drops > int(self.options.get("reconnects", 5)):
                    raise BinsortError(
                        "SSH link to %s kept dropping (%s); what arrived is kept: run the same "
                        "command again to go on" % (self.url, e or type(e).__name__)
                    ) from None
                dropped = str(e) or type(e).__name__
                self.log("link dropped (%s): reconnecting" % dropped)
            finally:
                client.close()

    def _pull_once(self, client) -> None:
        _, _, _, path = ssh.parse(self.url)
        sftp = client.open_sftp()
        ring = _capture_dir(sftp, path)
        files = {}  # capture name -> its files in the ring, from one listing
        for f in sftp.listdir(ring):
            files.setdefault(f.split(".", 1)[0], []).append(f)
        names = sorted(n for n, fs in files.items() if NAME.match(n) and n + ".json" in fs)
        for name in names:
            if name in self.state["pulled"]:
                self.counts["already"] += 1
            elif not self._pull_capture(sftp, ring, name):
                continue
            if self.options.get("remove"):
                self._remove(sftp, ring, name, files[name])

    def _read_remote(self, sftp, path: str, limit: int) -> "bytes | None":
        try:
            with sftp.open(path, "rb") as f:
                return f.read(limit + 1)
        except FileNotFoundError:
            return None

    def _pull_capture(self, sftp, ring: str, name: str) -> bool:
        """Fetch one capture into place; False when it is gone or damaged."""
        raw = self._read_remote(sftp, "%s/%s.json" % (ring, name), 1 << 20)
        if raw is None:  # the ring dropped it since the listing
            self.counts["gone"] += 1
            return False
        meta = _check_sidecar(raw, name)
        if meta is None:
            self.log("skipped %s: its sidecar is not a binsort capture" % name)
            self.counts["damaged"] += 1
            return False
        label = meta["label"] if LABEL.match(meta["label"]) else "_unlabelled"
        fetched = {}
        for role, f in meta["files"].items():
            local = self._fetch(sftp, ring, f)
            if local is None:
                return False
            fetched[role] = (local, f["name"])
        os.makedirs(os.path.join(self.out, label), exist_ok=True)
        write_atomic(os.path.join(self.out, ".captures", name + ".json"), raw)
        for role, (local, fname) in fetched.items():
            folder = label if role == "input" else ".frames"
            os.replace(local, os.path.join(self.out, folder, fname))
        self.state["pulled"][name] = os.path.join(label, fetched["input"][1])
        self._save_state()
        self.counts["pulled"] += 1
        return True

    def _fetch(self, sftp, ring: str, f: dict) -> "str | None":
        """One file into .partial/, resuming after what is there; its path once its size and
        SHA-256 match the sidecar, else None (counted, and the partial file removed)."""
        local = os.path.join(self.out, ".partial", f["name"])
        have = os.path.getsize(local) if os.path.exists(local) else 0
        if have > f["bytes"]:
            have = 0
        try:
            with sftp.open("%s/%s" % (ring, f["name"]), "rb") as src:
                size = src.stat().st_size
                if size != f["bytes"] or not stat.S_ISREG(src.stat().st_mode):
                    raise _Damaged()
                src.seek(have)
                with open(local, "r+b" if have else "wb") as dst:
                    dst.seek(have)
                    dst.truncate()
                    while have < size:
                        block = src.read(min(BLOCK, size - have))
                        if not block:
                            raise EOFError("the file ended early")
                        dst.write(block)
                        have += len(block)
                        self.counts["bytes"] += len(block)
        except FileNotFoundError:
            self.counts["gone"] += 1
            return None
        except _Damaged:
            self.counts["damaged"] += 1
            self.log("skipped %s: not the size its sidecar gives" % f["name"])
            return None
        h = hashlib.sha256()
        with open(local, "rb") as fh:
            h.update(fh.read())
        if h.hexdigest() != f["sha256"]:
            os.remove(local)
            self.counts["damaged"] += 1
            self.log("skipped %s: its SHA-256 does not match its sidecar" % f["name"])
            return None
        return local

    def _remove(self, sftp, ring: str, name: str, files: list) -> None:
        """Free the device's ring of a capture that is safely here (sidecar first)."""
        try:
            sftp.remove("%s/%s.json" % (ring, name))
        except FileNotFoundError:
            return
        for fname in files:
            if fname != name + ".json":
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove("%s/%s" % (ring, fname))
        self.counts["removed"] += 1


class _Damaged(Exception):
    pass


def pull(url: str, out: str, options: dict, log=print) -> dict:
    """Pull a device's captures into `out`; returns counts (pulled, already, gone, damaged,
    removed, bytes)."""
    if not url.startswith("ssh://"):
        raise BinsortError("pull needs ssh://USER@HOST[:PORT]/STORE, not %r" % url)
    ssh.parse(url)
    return Puller(url, out, options, log).run()

"""`binsort-edge setup`: make this machine a sorting station, and do it again without change.

Each step looks before it acts and reports `ok` (already so), `changed` (done now) or
`skipped` (with why: not root, no systemd, or `--root`, which sets the station up under a
folder instead of /, as a chroot or an image being built):

    user     the `binsort` system user, in the video, gpio and dialout groups that exist
    config   /etc/binsort/edge.toml, the annotated example, only where there is none (a
             config that is there is checked, never overwritten)
    store    /var/lib/binsort, a model store trusting the --trust keys (keys added later)
    unit     /etc/systemd/system/binsort-edge.service, the packaged unit, its ExecStart this
             installation's binsort-edge
    service  systemctl daemon-reload (when the unit changed) and enable --now

The Python side (a venv with the system's site packages, for apt's picamera2, lgpio and numpy)
comes first: tools/install-pi does both (README, "Deploy to a Pi").
"""

import grp
import os
import pwd
import shutil
import subprocess
import sys

from protocol.errors import BinsortError

USER = "binsort"
GROUPS = ("video", "gpio", "dialout")
CONFIG = "etc/binsort/edge.toml"
STORE = "var/lib/binsort"
UNIT = "etc/systemd/system/binsort-edge.service"
PACKAGED_UNIT_EXEC = "/usr/local/bin/binsort-edge"


def _packaged(name: str) -> str:
    with open(os.path.join(os.path.dirname(__file__), "line", name)) as f:
        return f.read()


def _command() -> str:
    """The binsort-edge this setup runs as (a venv's, or /usr/local/bin's)."""
    if os.path.basename(sys.argv[0]) == "binsort-edge":
        return os.path.abspath(sys.argv[0])
    return shutil.which("binsort-edge") or PACKAGED_UNIT_EXEC


class Setup:
    def __init__(self, root: str = "/", trust=(), command: "str | None" = None, start=True):
        self.root, self.trust, self.start = root, list(trust), start
        self.command = command or _command()
        self.system = os.path.abspath(root) == "/"
        self.is_root = os.geteuid() == 0
        self.steps = []
        self.unit_changed = False  # set by unit(), read by service()

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def _step(self, name: str, result: str, what: str) -> None:
        self.steps.append({"step": name, "result": result, "what": what})

    def check(self) -> None:
        """What would stop a step half way, found before any step changes anything."""
        from edge.line.config import load_config
        from protocol.signing import read_public

        for key in self.trust:
            read_public(key)
        if not os.path.exists(os.path.join(self.path(STORE), "store.json")) and not self.trust:
            raise BinsortError(
                "setup: a new store needs --trust signing.pub (the key models are signed with)"
            )
        if os.path.exists(self.path(CONFIG)):
            load_config(self.path(CONFIG))  # a broken config: one line, before anything changes

    def run(self) -> list:
        self.check()
        for step in (self.user, self.config, self.store, self.unit, self.service):
            step()
        return self.steps

    def user(self) -> None:
        if not self.system:
            return self._step("user", "skipped", "--root: the system's users are not touched")
        groups = [g for g in GROUPS if _exists(grp.getgrnam, g)]
        have = _exists(pwd.getpwnam, USER)
        member = [g for g in groups if have and USER in grp.getgrnam(g).gr_mem]
        if have and member == groups:
            return self._step("user", "ok", "%s, in %s" % (USER, ", ".join(groups) or "no groups"))
        if not self.is_root:
            return self._step("user", "skipped", "not root: run setup with sudo")
        if not have:
            _run(["useradd", "--system", "--no-create-home", "--home-dir", "/" + STORE,
                  "--shell", "/usr/sbin/nologin", USER])  # fmt: skip
        if groups:
            _run(["usermod", "-a", "-G", ",".join(groups), USER])
        self._step("user", "changed", "%s, in %s" % (USER, ", ".join(groups) or "no groups"))

    def config(self) -> None:
        path = self.path(CONFIG)
        if os.path.exists(path):  # checked by check()
            return self._step("config", "ok", "%s is there (checked, kept)" % path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, _packaged("edge.toml"), 0o644)
        self._step("config", "changed", "%s: the annotated example; edit it for the line" % path)

    def store(self) -> None:
        from edge.install.store import SlotStore
        from protocol.signing import key_id, read_public

        path = self.path(STORE)
        exists = os.path.exists(os.path.join(path, "store.json"))
        new = [
            p
            for p in self.trust
            if not os.path.exists(os.path.join(path, "trust", key_id(read_public(p)) + ".pub"))
        ]
        if exists and not new:
            return self._step("store", "ok", "%s trusts its keys" % path)
        SlotStore.init(path, self.trust)
        if self.system and self.is_root and _exists(pwd.getpwnam, USER):
            _chown_tree(path, USER)
        what = "made, trusting" if not exists else "now also trusts"
        self._step("store", "changed", "%s %s %s" % (path, what, ", ".join(new)))

    def unit(self) -> None:
        path = self.path(UNIT)
        text = _packaged("binsort-edge.service").replace(PACKAGED_UNIT_EXEC, self.command)
        if os.path.exists(path):
            with open(path) as f:
                if f.read() == text:
                    return self._step("unit", "ok", "%s runs %s" % (path, self.command))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, text, 0o644)
        self.unit_changed = True
        self._step("unit", "changed", "%s runs %s" % (path, self.command))

    def service(self) -> None:
        if not self.system:
            return self._step("service", "skipped", "--root: enable it when the system boots")
        if not os.path.isdir("/run/systemd/system"):
            return self._step("service", "skipped", "systemd is not running here")
        if not self.is_root:
            return self._step("service", "skipped", "not root: run setup with sudo")
        changed = []
        if self.unit_changed:
            _run(["systemctl", "daemon-reload"])
            changed.append("reloaded")
        enabled = subprocess.run(["systemctl", "is-enabled", "--quiet", "binsort-edge"]).returncode
        if enabled != 0:
            _run(["systemctl", "enable", "binsort-edge"])
            changed.append("enabled")
        if self.start:
            active = subprocess.run(["systemctl", "is-active", "--quiet", "binsort-edge"])
            if active.returncode != 0:
                _run(["systemctl", "start", "binsort-edge"])
                changed.append("started")
            elif "reloaded" in changed:
                _run(["systemctl", "restart", "binsort-edge"])
                changed.append("restarted")
        if changed:
            return self._step("service", "changed", "binsort-edge " + ", ".join(changed))
        self._step("service", "ok", "binsort-edge enabled" + (" and running" if self.start else ""))


def _exists(lookup, name: str) -> bool:
    """Whether grp.getgrnam or pwd.getpwnam knows `name`."""
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def _chown_tree(path: str, user: str) -> None:
    info = pwd.getpwnam(user)
    for dirpath, _, files in os.walk(path):
        os.chown(dirpath, info.pw_uid, info.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), info.pw_uid, info.pw_gid)


def _write(path: str, text: str, mode: int) -> None:
    from edge.files import write_atomic

    write_atomic(path, text.encode())
    os.chmod(path, mode)


def _run(cmd: list) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BinsortError("setup: %s is not installed here" % cmd[0]) from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
        raise BinsortError("setup: %s failed: %s" % (" ".join(cmd[:2]), why))

"""The model store on the device: trusted keys, two model slots (A/B), partial transfers, a log.

Layout of a store directory (docs/format.md "Model store"):

    store.json            state: active slot, what each slot holds, manifests installed, limits
    trust/*.pub           the public keys whose manifests this device accepts
    slots/a/, slots/b/    model.bnn or model.pranc and manifest.json of the model in that slot
    partial/SHA.partial   bytes of a transfer in progress, named by the payload's SHA-256
    partial/SHA.json      its manifest digest and how many bytes are durably in the file
    log                   one line per install, rejection and rollback
    lock                  what store operations lock (it is never replaced)

Every install path (the receiver, the SSH install command, the daemon) calls `admit()` before it
writes any byte of a payload and `install()` after the payload is complete and checked, so they
share one set of checks. An install writes to the inactive slot, fsyncs it, loads and self-tests
it there, and only then switches `active` by atomically replacing store.json: a power cut at
any point leaves the old model or the new one active, never a half-written one.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time

from edge.files import fsync_dir, write_atomic
from protocol.chunks import good_prefix
from protocol.errors import BinsortError, FormatError
from protocol.manifest import Manifest
from protocol.signing import parse_public, verify_manifest

STATE_FORMAT = "binsort-store/1"
SLOTS = ("a", "b")
DEFAULT_MAX_BYTES = 16 << 20
# a delta's slot holds the .bnn it made, not the delta
SUFFIX = {"bnn": ".bnn", "pranc": ".pranc", "cascade": ".bsc", "delta": ".bnn"}
LOG_LINE = 300  # characters of one log line
LOG_BYTES = 256 << 10  # the log is rotated to log.1 at this size
REFUSALS_PER_MINUTE = 20  # refusal lines logged a minute; the rest are counted in one line
ABANDONED_S = 7 * 86400  # a partial transfer untouched this long is removed


class Rejected(FormatError):
    """A manifest or payload the device refuses; nothing was written to a slot."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


class SlotStore:
    """A store directory. Methods that change it take an exclusive lock on it."""

    def __init__(self, root: str):
        self.root = root
        self._log_lock = threading.Lock()
        self._refusals = [0.0, 0, 0]  # minute started at, lines logged in it, lines held back
        self.on_refusal = None  # also tell this callable each refusal line that is logged
        if not os.path.isfile(self._path("store.json")):
            raise BinsortError(
                "%s is not a binsort model store (make one with: "
                "binsort-edge store --store %s --init --trust KEY.pub)" % (root, root)
            )

    # -- provisioning -------------------------------------------------------------------------

    @classmethod
    def init(cls, root: str, trust: list, max_bytes: int = DEFAULT_MAX_BYTES) -> "SlotStore":
        """Make a store that trusts the public key files `trust`, or add them to a store."""
        if not trust:
            raise BinsortError("a store needs at least one --trust public key")
        keys = [(p, parse_public(_read_text(p), p)) for p in trust]
        for d in ("", "trust", "partial", "slots/a", "slots/b"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for path, raw in keys:
            from protocol.signing import key_id, public_line

            write_atomic(
                os.path.join(root, "trust", key_id(raw) + ".pub"),
                public_line(raw, os.path.basename(path)).encode(),
            )
        state_path = os.path.join(root, "store.json")
        if not os.path.exists(state_path):
            state = {
                "format": STATE_FORMAT,
                "active": None,
                "slots": {s: None for s in SLOTS},
                "installed": [],
                "max_bytes": max_bytes,
                "store_id": os.urandom(8).hex(),
                "floor": 0,
            }
            write_atomic(state_path, _dump(state))
        else:
            with open(state_path, "rb") as f:
                state = json.loads(f.read().decode())
            if "store_id" not in state:  # a store made before stores had ids
                state["store_id"] = os.urandom(8).hex()
                write_atomic(state_path, _dump(state))
        store = cls(root)
        store.log("trust %s" % ", ".join(os.path.basename(p) for p in trust))
        return store

    # -- reading ------------------------------------------------------------------------------

    def _path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def state(self) -> dict:
        try:
            with open(self._path("store.json"), "rb") as f:
                state = json.loads(f.read().decode())
        except (OSError, ValueError, UnicodeError) as e:
            raise BinsortError("cannot read %s: %s" % (self._path("store.json"), e)) from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise BinsortError("%s is not a %s file" % (self._path("store.json"), STATE_FORMAT))
        return state

    def trusted_keys(self) -> list:
        keys = []
        tdir = self._path("trust")
        for name in sorted(os.listdir(tdir)):
            if name.endswith(".pub"):
                keys.append(parse_public(_read_text(os.path.join(tdir, name)), name))
        if not keys:
            raise BinsortError("store %s trusts no keys; add one with --init --trust" % self.root)
        return keys

    def active(self):
        """(slot name, slot record) of the active model, or (None, None)."""
        state = self.state()
        name = state["active"]
        return (name, state["slots"][name]) if name else (None, None)

    def model_path(self, slot: str) -> "str | None":
        rec = self.state()["slots"].get(slot)
        return self._path("slots", slot, "model" + SUFFIX[rec["kind"]]) if rec else None

    def summary(self) -> dict:
        """The state as `binsort-edge store --json` prints it."""
        state = self.state()
        return {
            "store": os.path.abspath(self.root),
            "store_id": state.get("store_id"),  # what `binsort ship --store-id` binds to
            "version_floor": state.get("floor", 0),
            "active": state["active"],
            "slots": state["slots"],
            "trusted_keys": sorted(n[:-4] for n in os.listdir(self._path("trust"))),
            "max_bytes": state["max_bytes"],
            "partial": sorted(
                n.split(".")[0] for n in os.listdir(self._path("partial")) if n.endswith(".partial")
            ),
        }

    # -- checks -------------------------------------------------------------------------------

    def verify(self, manifest_bytes: bytes) -> Manifest:
        """Check the signature against the store's trusted keys, then admit()."""
        try:
            manifest = verify_manifest(manifest_bytes, self.trusted_keys())
        except FormatError as e:
            self.log_refusal("reject: %s" % e)
            raise Rejected(str(e)) from None
        self.admit(manifest)
        return manifest

    def admit(self, manifest: Manifest) -> None:
        """Refuse, before any byte is written, a manifest this device must not install: too
        big, already installed (a replay), or not newer than the active model unless it is a
        signed rollback. A `.pranc` manifest whose prefix is active may continue."""
        state = self.state()
        why = None
        _, active = self.active()
        # the version floor: the newest version ever installed here, kept across rollbacks,
        # so a captured manifest of an older version cannot be replayed after one
        floor = max(state.get("floor", 0), active["version"] if active else 0)
        if manifest.size > state["max_bytes"]:
            why = "payload of %d bytes is over this device's limit of %d bytes" % (
                manifest.size,
                state["max_bytes"],
            )
        elif active and active["manifest"] == manifest.digest and not active["complete"]:
            return  # more of the active .pranc stream, .bsc cascade or .bsd delta
        elif manifest.kind == "delta" and not (
            active and manifest.base in (active["sha256"], active.get("recalibrated_from"))
        ):
            why = "this delta applies to model %s, which this device does not run (%s)" % (
                manifest.base[:16],
                "it runs %s" % active["sha256"][:16] if active else "it has no model",
            )
        elif manifest.store is not None and manifest.store != state.get("store_id"):
            why = "the manifest is bound to another device's store"
        elif manifest.expires is not None and manifest.expires < time.time():
            why = "the manifest expired at %s" % time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(manifest.expires)
            )
        elif manifest.digest in state["installed"]:
            why = "replayed manifest: %s version %d was already installed" % (
                manifest.model_id,
                manifest.version,
            )
        elif manifest.version <= floor and not manifest.rollback:
            if active and floor == active["version"]:
                why = "version %d is not newer than the active version %d (ship a rollback)" % (
                    manifest.version,
                    floor,
                )
            else:
                why = (
                    "version %d is not newer than version %d, the newest this device has "
                    "installed (ship a rollback)" % (manifest.version, floor)
                )
        if why:
            self.log_refusal("reject %s v%d: %s" % (manifest.model_id, manifest.version, why))
            raise Rejected(why)

    # -- installing ---------------------------------------------------------------------------

    def install(self, manifest: Manifest, payload_path: str, length=None, move=False) -> str:
        """Install the first `length` bytes (all when None) of `payload_path` as `manifest`'s
        model; `length` short of the size is a `.pranc` prefix and must end on a chunk of the
        manifest. Checks every hash and self-tests the model before it touches a slot, then
        writes the inactive slot, self-tests the copy and switches to it. Returns the slot.
        `move` renames a complete payload into the slot instead of copying it."""
        with self.locked():
            self.admit(manifest)
            size = manifest.size
            length = size if length is None else length
            complete = length == size
            made = None  # a delta: the .bnn it makes, in a file of its own
            try:
                self._check_payload(manifest, payload_path, length)
                if manifest.kind == "delta":
                    made = self._apply_delta(manifest, payload_path, length)
                    _self_test(made, None)
                else:
                    _self_test(payload_path, None if complete else length)
            except Rejected as e:
                if made is not None:
                    with contextlib.suppress(OSError):
                        os.remove(made)
                self.log_refusal("reject %s v%d: %s" % (manifest.model_id, manifest.version, e))
                raise
            if made is not None:
                place = lambda target: os.replace(made, target)  # noqa: E731
            elif move and complete:
                place = lambda target: os.replace(payload_path, target)  # noqa: E731
            else:
                place = lambda target: _copy_prefix(payload_path, target, length)  # noqa: E731
            record = {
                "model_id": manifest.model_id,
                "version": manifest.version,
                "kind": manifest.kind,
                "bytes": length,
                "size": size,
                "complete": complete,
                "rollback": manifest.rollback,
                "manifest": manifest.digest,
            }
            if manifest.base:
                record["base"] = manifest.base
            what = "rollback to" if manifest.rollback else "install"
            slot = self._switch_to(
                place,
                SUFFIX[manifest.kind],
                manifest.raw,
                record,
                "%s %s v%d (%s, %d of %d bytes)"
                % (what, manifest.model_id, manifest.version, manifest.kind, length, size),
                installed=manifest.digest if complete else None,
                floor=None if manifest.rollback else manifest.version,
            )
            return slot

    def install_local(self, data: bytes, record: dict, what: str) -> str:
        """Install a `.bnn` this device made itself from its active model (a recalibration,
        edge.engine.recalibrate): no manifest, so no version floor or replay record changes;
        the same slot, self-test and trial as any install. `record` adds to the slot's entry
        in store.json. Returns the slot."""
        with self.locked():
            tmp = self._path("partial", "local.made.bnn")
            write_atomic(tmp, data)
            try:
                _self_test(tmp, None)
            except Rejected:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
            base = {"kind": "bnn", "bytes": len(data), "size": len(data), "complete": True}
            base.update(rollback=False, manifest=None, **record)
            return self._switch_to(lambda target: os.replace(tmp, target), ".bnn", None, base, what)

    def _switch_to(self, place, suffix, manifest_raw, record, what, installed=None, floor=None):
        """(with the lock held) Write a checked model into the inactive slot through `place`,
        self-test it there and make it active, on trial. Returns the slot."""
        state = self.state()
        slot = _other(state["active"])
        trial = state.get("trial")
        keep = trial.get("previous") if trial and trial.get("previous_confirmed") else None
        confirmed = trial is None  # the active model passed its trial (or had none)
        if keep and state["slots"].get(keep) and not state["slots"][keep].get("failed"):
            # A model is on trial and the confirmed one it replaced is the rollback target:
            # that one stays. The unconfirmed model gives way: the confirmed one is made
            # active again first, so a power cut from here on finds it, whole.
            slot = state["active"]
            state["active"], state["slots"][slot] = keep, None
            state.pop("trial", None)
            confirmed = True
            write_atomic(self._path("store.json"), _dump(state))
            self.log("the model on trial in slot %s gives way to a new install" % slot)
        elif state["slots"][slot] is not None:  # its model is about to be overwritten
            state["slots"][slot] = None
            write_atomic(self._path("store.json"), _dump(state))
        sdir = self._path("slots", slot)
        for name in os.listdir(sdir):
            os.remove(os.path.join(sdir, name))
        target = os.path.join(sdir, "model" + suffix)
        place(target)
        if manifest_raw is not None:
            write_atomic(os.path.join(sdir, "manifest.json"), manifest_raw)
        fsync_dir(sdir)
        _self_test(target, None)
        entry = dict(record)
        entry["sha256"] = file_sha256(target)
        entry["installed_at"] = int(time.time())
        state["slots"][slot] = entry
        previous = state["active"]  # the model that was running, confirmed or not
        state["active"] = slot
        # on trial until the daemon confirms it; a restart during the trial rolls back
        state["trial"] = {
            "slot": slot,
            "previous": previous,
            "previous_confirmed": confirmed,  # a rollback target the next install keeps
            "running": False,
        }
        if installed is not None:
            state["installed"].append(installed)
            if floor is not None:
                state["floor"] = max(state.get("floor", 0), floor)
        write_atomic(self._path("store.json"), _dump(state))
        self.log("%s in slot %s" % (what, slot))
        return slot

    def _apply_delta(self, manifest: Manifest, path: str, length: int) -> str:
        """The `.bnn` that the first `length` bytes of a delta make from its base model (in
        either slot, checked against its recorded SHA-256), written and fsynced to a file in
        partial/; Rejected if the base is gone or the delta does not make what it names."""
        from protocol.delta import apply_delta

        state = self.state()
        base = None
        for slot in SLOTS:
            rec = state["slots"].get(slot)
            if rec and rec.get("sha256") == manifest.base and not rec.get("failed"):
                with contextlib.suppress(OSError), open(self.model_path(slot), "rb") as f:
                    data = f.read()
                    if hashlib.sha256(data).hexdigest() == manifest.base:
                        base = data
                        break
        if base is None:
            raise Rejected("the model this delta applies to (%s) is gone" % manifest.base[:16])
        with open(path, "rb") as f:
            delta = f.read(length)
        try:
            update = apply_delta(base, delta)
        except FormatError as e:
            raise Rejected(str(e)) from None
        made = self._path("partial", manifest.sha256 + ".made.bnn")
        with open(made, "wb") as f:
            f.write(update.data)
            f.flush()
            os.fsync(f.fileno())
        return made

    def _check_payload(self, manifest: Manifest, path: str, length: int) -> None:
        try:
            have = os.path.getsize(path)
        except OSError as e:
            raise BinsortError("cannot read payload %s: %s" % (path, e.strerror)) from None
        if have < length or (length == manifest.size and have != manifest.size):
            raise Rejected("payload has %d bytes, the manifest says %d" % (have, manifest.size))
        ends = manifest.chunk_ends()
        if length not in ends:
            raise Rejected("a prefix of %d bytes does not end on a chunk of the manifest" % length)
        with open(path, "rb") as f:
            _, bad = good_prefix(manifest.signed["chunks"], f, length)
        if bad is not None:
            raise Rejected("tampered payload: chunk ending at byte %d fails its hash" % bad)
        if length == manifest.size and file_sha256(path) != manifest.sha256:
            raise Rejected("tampered payload: its SHA-256 does not match the manifest")

    # -- trial and rollback (the daemon, issue 5) ---------------------------------------------

    def trial(self):
        """The trial record, {"slot", "previous", "running"}, or None when the active model
        is confirmed."""
        return self.state().get("trial")

    def begin_trial(self) -> None:
        """The daemon now runs the model on trial: from here a restart means it failed."""
        with self.locked():
            state = self.state()
            trial = state.get("trial")
            if trial and not trial["running"]:
                trial["running"] = True
                trial["started_at"] = int(time.time())
                write_atomic(self._path("store.json"), _dump(state))
                self.log("trial of slot %s started" % trial["slot"])

    def pause_trial(self) -> None:
        """The daemon ends for a reason that is not the model's: a trial it was running is
        not counted as failed (recover() rolls back only a running one); it starts again."""
        with self.locked():
            state = self.state()
            trial = state.get("trial")
            if trial and trial["running"]:
                trial["running"] = False
                write_atomic(self._path("store.json"), _dump(state))
                self.log("trial of slot %s paused: the daemon restarts" % trial["slot"])

    def commit_trial(self, why: str) -> None:
        with self.locked():
            state = self.state()
            trial = state.pop("trial", None)
            if trial and trial["slot"] == state["active"]:
                write_atomic(self._path("store.json"), _dump(state))
                self.log("confirmed slot %s: %s" % (trial["slot"], why))

    def rollback(self, why: str):
        """Mark the active slot failed, so it is never chosen again, and make active the first
        slot that is intact and not marked failed: the trial's previous model first, then any
        other. A slot whose file no longer matches its recorded SHA-256 is marked failed too.
        None is active when no slot qualifies. Returns the slot now active."""
        with self.locked():
            state = self.state()
            trial = state.pop("trial", None)
            failed = state["active"]
            if failed and state["slots"].get(failed):
                state["slots"][failed]["failed"] = why
            order = [trial["previous"]] if trial and trial.get("previous") else []
            order += [s for s in SLOTS if s not in order and s != failed]
            state["active"] = None
            for slot in order:
                if self._intact(state, slot):
                    state["active"] = slot
                    break
            write_atomic(self._path("store.json"), _dump(state))
            self.log("rollback from slot %s to %s: %s" % (failed, state["active"], why))
            return state["active"]

    def activate(self, slot: str, why: str) -> str:
        """Make `slot` active again (a model this device ran before; edge.install.recalibration
        undoes a recalibration so), ending any trial. Rejected when it is empty, marked failed
        or damaged."""
        with self.locked():
            state = self.state()
            if not self._intact(state, slot):
                write_atomic(self._path("store.json"), _dump(state))
                raise Rejected("slot %s holds no intact model to go back to" % slot)
            previous = state["active"]
            state["active"] = slot
            state.pop("trial", None)
            write_atomic(self._path("store.json"), _dump(state))
            self.log("slot %s active again instead of %s: %s" % (slot, previous, why))
            return slot

    def _intact(self, state: dict, slot: str) -> bool:
        """Whether `slot` holds a model not marked failed whose file matches its SHA-256;
        a damaged one is marked failed in `state`."""
        rec = state["slots"].get(slot)
        if not rec or rec.get("failed"):
            return False
        path = self._path("slots", slot, "model" + SUFFIX[rec["kind"]])
        try:
            digest = file_sha256(path)
        except OSError:
            digest = None
        if digest != rec["sha256"]:
            rec["failed"] = "its file no longer matches its recorded SHA-256"
            self.log("slot %s is damaged: not chosen" % slot)
            return False
        return True

    def recover(self):
        """At start: a trial that was running means the daemon died during it (crash, power
        loss, watchdog): roll back. Returns the reason, or None."""
        trial = self.trial()
        if trial and trial["running"]:
            why = (
                "restarted during the trial of slot %s (crash, power loss or watchdog)"
                % trial["slot"]
            )
            self.rollback(why)
            return why
        return None

    # -- partial transfers --------------------------------------------------------------------

    def partial(self, manifest: Manifest) -> "tuple[str, object, int]":
        """The `.partial` file for this payload, open for writing and locked for this session
        alone, and how many bytes of it are durable and verified (whole chunks checked against
        the manifest, then the recorded tail): (path, file, good). The file is opened without
        following a symbolic link, so a link planted there is refused, never written through;
        Rejected when another session holds the payload."""
        self.drop_abandoned()
        base = self._path("partial", manifest.sha256)
        path, progress = base + ".partial", base + ".json"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise Rejected("cannot open the partial file: %s" % (e.strerror or e)) from None
        f = os.fdopen(fd, "r+b")
        # one session per payload: a second would interleave its bytes with the first's. A
        # sender that reconnects may find its old connection still closing: wait a little.
        for attempt in range(40):
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt == 39:
                    f.close()
                    raise Rejected("this payload is being received by another session") from None
                time.sleep(0.05)
        try:
            good = self._verified_length(manifest, progress, f)
            held = self.held(manifest) if good < manifest.size else None
            if held is not None:  # a model one of the slots holds: no byte needs to travel
                f.seek(0)
                with open(held, "rb") as src:
                    for block in iter(lambda: src.read(1 << 16), b""):
                        f.write(block)
                good = manifest.size
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
            f.seek(good)
            if held is not None:
                self.record_progress(manifest, good)
        except BaseException:
            f.close()
            raise
        return path, f, good

    def held(self, manifest: Manifest) -> "str | None":
        """The file of a slot that holds this manifest's whole payload, intact (its SHA-256 is
        the manifest's), or None. A rollback to the model in the other slot, or the same model
        shipped again, then costs no payload bytes on the link (docs/format.md "Model store").
        A delta's slot holds the model it made, never the delta, so a delta is never held."""
        state = self.state()
        for slot in SLOTS:
            rec = state["slots"].get(slot)
            if not rec or rec.get("sha256") != manifest.sha256 or not rec.get("complete"):
                continue
            path = self._path("slots", slot, "model" + SUFFIX[rec["kind"]])
            with contextlib.suppress(OSError):
                if os.path.getsize(path) == manifest.size and file_sha256(path) == manifest.sha256:
                    return path
        return None

    def _verified_length(self, manifest: Manifest, progress: str, f) -> int:
        done = 0
        with contextlib.suppress(OSError, ValueError, UnicodeError, RuntimeError, TypeError):
            with open(progress, "rb") as p:
                rec = json.loads(p.read(4096).decode())
            if rec.get("manifest") == manifest.digest:
                done = int(rec["offset"])
        size = os.fstat(f.fileno()).st_size
        done = max(0, min(done, size, manifest.size))
        if not done:
            return 0
        # whole chunks must match their hashes; the tail of an incomplete chunk is kept and is
        # checked when that chunk completes
        f.seek(0)
        verified, bad = good_prefix(manifest.signed["chunks"], f, done)
        return verified if bad is not None else done

    def drop_abandoned(self, max_age_s: float = ABANDONED_S) -> list:
        """Remove transfers nobody has touched for `max_age_s` (a sender that never came back
        must not keep its bytes on the device for ever); a transfer a session holds stays.
        Returns the names removed."""
        folder, gone = self._path("partial"), []
        cutoff = time.time() - max_age_s
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if st.st_mtime > cutoff:
                    continue
                if name.endswith(".partial") and not os.path.islink(path):
                    with open(path, "rb") as f:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: skip it
                os.remove(path)
                gone.append(name)
            except OSError:
                continue
        if gone:
            self.log("removed %d abandoned partial files" % len(gone))
        return gone

    def record_progress(self, manifest: Manifest, offset: int) -> None:
        """Persist that the first `offset` bytes of the `.partial` file are durable (the
        caller fsynced them first)."""
        base = self._path("partial", manifest.sha256)
        write_atomic(base + ".json", _dump({"manifest": manifest.digest, "offset": offset}))

    def drop_partial(self, manifest: Manifest) -> None:
        base = self._path("partial", manifest.sha256)
        for p in (base + ".partial", base + ".json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        """Exclusive across processes and threads. The lock is on STORE/lock, a file that is
        never replaced: store.json itself is replaced on every write, so a lock on it would
        not exclude a writer that opened the new one."""
        fd = os.open(self._path("lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def log(self, line: str) -> None:
        """Append one line to STORE/log. A line is at most LOG_LINE characters (refusals
        quote what a peer sent), and the log is rotated to log.1 at LOG_BYTES, so a peer
        sending refused offers all day fills at most 2 x LOG_BYTES of the disk."""
        self._flush_refusals(time.monotonic())
        self._append(line)

    def log_refusal(self, line: str) -> None:
        """A refusal, logged like any line up to REFUSALS_PER_MINUTE a minute; past that they
        are counted, and the count is logged in one line once the minute is over, so a flood
        of refused offers cannot rotate the installs and rollbacks out of the log."""
        now = time.monotonic()
        self._flush_refusals(now)
        with self._log_lock:
            window = self._refusals
            if window[1] >= REFUSALS_PER_MINUTE:
                window[2] += 1
                return
            window[1] += 1
        self._append(line)
        if self.on_refusal is not None:
            self.on_refusal(line)

    def _flush_refusals(self, now: float) -> None:
        with self._log_lock:
            started, _, held = self._refusals
            if now - started < 60.0:
                return
            self._refusals = [now, 0, 0]
        if held:
            line = "%d more refusals in the minute before were not logged" % held
            self._append(line)
            if self.on_refusal is not None:
                self.on_refusal(line)

    def tail_log(self, lines: int) -> list:
        """The last `lines` lines of the log (from log.1 too when the log was just rotated)."""
        out = []
        for path in (self._path("log"), self._path("log.1")):
            want = lines - len(out)
            if want <= 0:
                break
            with contextlib.suppress(OSError), open(path, "rb") as f:
                start = max(0, os.fstat(f.fileno()).st_size - (LOG_LINE + 32) * want)
                f.seek(start)
                text = f.read().decode("utf-8", "replace").splitlines()
                out = text[1 if start else 0 :][-want:] + out
        return out

    def slots_summary(self) -> dict:
        """What a fleet tool needs to know of this store (`binsort fleet`): its id, the active
        slot and what each slot holds, by SHA-256, so a signed rollback can name the other one."""
        state = self.state()
        keep = ("model_id", "version", "kind", "sha256", "size", "complete", "rollback", "failed")
        slots = {
            name: {k: rec.get(k) for k in keep} if rec else None
            for name, rec in state["slots"].items()
        }
        trial = state.get("trial")
        return {
            "store_id": state.get("store_id"),
            "active": state["active"],
            "trial": trial["slot"] if trial else None,
            "version_floor": state.get("floor", 0),
            "slots": slots,
        }

    def _append(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = " ".join(str(line).split())
        if len(text) > LOG_LINE:
            text = text[: LOG_LINE - 3] + "..."
        path = self._path("log")
        with self._log_lock:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) >= LOG_BYTES:
                    os.replace(path, path + ".1")
            with open(path, "a") as f:
                f.write("%s %s\n" % (stamp, text))


def _self_test(path: str, prefix_bytes) -> None:
    """Load the model as the engine will (golden inputs for a .bnn, the host's layer CRCs for
    a .pranc prefix); Rejected if it does not load or does not compute what the host packed."""
    from edge.engine import load_engine

    try:
        load_engine(path, prefix_bytes)
    except FormatError as e:
        raise Rejected("the model fails its self-test on this device: %s" % e) from None


def _other(active) -> str:
    return "b" if active == "a" else "a"


def _dump(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeError) as e:
        raise BinsortError("cannot read %s: %s" % (path, e)) from None


def _copy_prefix(src: str, dst: str, length: int) -> None:
    with open(src, "rb") as fi, open(dst + ".tmp", "wb") as fo:
        left = length
        while left:
            block = fi.read(min(1 << 16, left))
            if not block:
                raise BinsortError("%s ended early" % src)
            fo.write(block)
            left -= len(block)
        fo.flush()
        os.fsync(fo.fileno())
    os.replace(dst + ".tmp", dst)

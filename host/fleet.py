"""Many devices at once: `binsort ship --fleet`, `binsort fleet status|logs|rollback|history`.

A fleet is the hosts of an Ansible inventory (host.inventory). One manifest is signed for the
whole rollout, so every device runs the same version, and it is shipped to each device over
its own URL by the same transports as `binsort ship --to`, at most `parallel` at a time. A
staged rollout ships to the first `canary` devices, then reads their status endpoints for
`watch` seconds and goes on to the rest only when every canary still runs the new model, has
no fault or source error and rejects no more boxes than allowed; otherwise it stops there.

Every rollout and rollback is appended to a deployment history on the host (one JSON object a
line; $XDG_STATE_HOME/binsort/deployments.jsonl unless --history). It keeps each shipped
manifest's signed part (a few KB: sizes, SHA-256 of the payload and of every chunk), which is
all a signed rollback needs: `binsort fleet rollback` reads which model the device's other
slot holds (by SHA-256, from its status endpoint), signs a rollback manifest for it, bound to
that device's store, and ships it with no payload: the device takes the bytes from its slot.
"""

import concurrent.futures
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request

from protocol.errors import BinsortError, bounded

STATUS_TIMEOUT_S = 5.0
WATCH_POLL_S = 1.0
NOT_STARTED = {"ok": False, "skipped": True, "error": "not started"}
MIN_BOXES = 20  # boxes a canary must decide in the watch before its reject rate is judged


# -- the deployment history ---------------------------------------------------------------------


def default_history() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state, "binsort", "deployments.jsonl")


def new_entry(action: str, **fields) -> dict:
    """A deployment record: a unique id, the time, the action and `fields`."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + os.urandom(3).hex()
    return dict({"id": stamp, "at": int(now), "action": action}, **fields)


def record(path: str, entry: dict, out) -> None:
    """Append one deployment to the history (one line, flushed and fsynced). A history that
    cannot be written is a warning on `out`, never an error: the deployment already happened."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        print(
            "warning: the deployment was not added to the history %s: %s" % (path, e.strerror or e),
            file=out,
        )


def read_history(path: str) -> list:
    """The deployments, oldest first. A line that is not a JSON object (a write cut short by
    a crash) is skipped, never fatal."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BinsortError("cannot read the history %s: %s" % (path, e.strerror or e)) from None
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def shipped_manifest(history: list, sha256: str) -> "dict | None":
    """The signed part of the newest shipped manifest whose payload has this SHA-256."""
    for entry in reversed(history):
        signed = entry.get("signed")
        if isinstance(signed, dict) and signed.get("sha256") == sha256:
            return signed
    return None


# -- status endpoints ---------------------------------------------------------------------------


def get_json(url: str, timeout: float = STATUS_TIMEOUT_S):
    """GET a JSON document; BinsortError naming what went wrong."""
    if not url.startswith(("http://", "https://")):
        raise BinsortError("%s: a status endpoint is http://HOST:PORT" % url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read(4 << 20)
    except urllib.error.HTTPError as e:
        raise BinsortError("%s answered HTTP %d" % (url, e.code)) from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        why = getattr(why, "strerror", None) or why
        raise BinsortError("%s did not answer: %s" % (url, why)) from None
    except (ValueError, http.client.InvalidURL) as e:  # a control character, a bad port
        raise BinsortError("%r is not a status URL: %s" % (url, e)) from None
    except http.client.HTTPException as e:  # a peer that answers, but not in HTTP
        raise BinsortError("%s did not answer in HTTP: %s" % (url, bounded(e, 80))) from None
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeError, RecursionError):  # a device answers what it likes
        raise BinsortError("%s did not answer with JSON" % url) from None


class OddStatus(BinsortError):
    """A status endpoint answered, with something that is not a binsort-edge status."""


def read_status(device) -> dict:
    """A device's /status.json, its fields this module reads checked for their types (a
    device answers what it likes: an odd answer is one line about that device, not a crash)."""
    status = get_json(device.status + "/status.json")
    why = _odd_status(status)
    if why:
        raise OddStatus("%s/status.json is not a binsort status (%s)" % (device.status, why))
    return status


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _odd_status(status) -> "str | None":
    if not isinstance(status, dict):
        return "not an object"
    model = status.get("model")
    if model is not None and not (
        isinstance(model, dict)
        and isinstance(model.get("model_id"), str)
        and _number(model.get("version"))
    ):
        return "model"
    for key in ("boxes", "rejects"):
        if not _number(status.get(key, 0)):
            return key
    if not all(_number(status.get(k) or 0) for k in ("reject_rate", "reject_alarm")):
        return "reject_rate"
    for key in ("state", "fault", "station"):
        if status.get(key) is not None and not isinstance(status[key], str):
            return key
    events = status.get("events") or []
    if not (isinstance(events, list) and all(isinstance(e, dict) for e in events)):
        return "events"
    errors = status.get("io_errors") or {}
    if not (
        isinstance(errors, dict)
        and all(isinstance(e, dict) and _number(e.get("count", 0)) for e in errors.values())
    ):
        return "io_errors"
    store = status.get("store")
    if store is not None:
        slots = store.get("slots") if isinstance(store, dict) else None
        if not isinstance(store, dict) or not isinstance(slots or {}, dict):
            return "store"
        for rec in (slots or {}).values():
            if rec is not None and not (
                isinstance(rec, dict) and isinstance(rec.get("sha256"), str)
            ):
                return "store slots"
    source = status.get("source")
    if source is not None and not isinstance(source, dict):
        return "source"
    return None


def status_row(device, status=None, error=None) -> dict:
    """One device's line of `binsort fleet status`."""
    row = {"device": device.name, "status_url": device.status, "reachable": error is None}
    if error is not None:
        row["error"] = str(error)
        row["state"] = "odd answer" if isinstance(error, OddStatus) else "unreachable"
        return row
    model = status.get("model") or {}
    store = status.get("store") or {}
    row.update(
        station=status.get("station"),
        state=status.get("state"),
        model_id=model.get("model_id"),
        version=model.get("version"),
        slot=model.get("slot"),
        trial=model.get("trial"),
        boxes=status.get("boxes"),
        reject_rate=status.get("reject_rate"),
        alarm=status.get("alarm"),
        fault=status.get("fault"),
        store_id=store.get("store_id"),
        io_errors=sum(e.get("count", 0) for e in (status.get("io_errors") or {}).values()),
    )
    return row


def fleet_status(devices: list, parallel: int = 16) -> list:
    def one(device):
        try:
            return status_row(device, read_status(device))
        except BinsortError as e:
            return status_row(device, error=e)

    with concurrent.futures.ThreadPoolExecutor(max(1, min(parallel, len(devices)))) as pool:
        return list(pool.map(one, devices))


def format_status(rows: list) -> str:
    head = ("DEVICE", "STATE", "MODEL", "VERSION", "SLOT", "BOXES", "REJECTS", "ERRORS")
    table = [head]
    for r in rows:
        if not r["reachable"]:
            table.append((r["device"], r["state"], r["error"], "", "", "", "", ""))
            continue
        rate = r["reject_rate"]
        table.append(
            (
                r["device"],
                (r["state"] or "?") + (" (fault)" if r["fault"] else ""),
                r["model_id"] or "-",
                str(r["version"]) if r["version"] is not None else "-",
                (r["slot"] or "-") + (" trial" if r["trial"] else ""),
                str(r["boxes"]),
                "-" if rate is None else "%.1f%%%s" % (100 * rate, " ALARM" if r["alarm"] else ""),
                str(r["io_errors"]),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    up = sum(1 for r in rows if r["reachable"])
    lines.append("%d of %d devices answered" % (up, len(rows)))
    return "\n".join(lines)


def device_logs(device, lines: int) -> dict:
    log = get_json("%s/log.json?lines=%d" % (device.status, lines))
    if not isinstance(log, dict):
        raise BinsortError("%s/log.json is not a binsort log" % device.status)
    return log


def format_logs(log: dict) -> str:
    out = ["# store log (installs, refusals, rollbacks)"]
    out += [str(line) for line in log.get("store") or []]
    out.append("# daemon log")
    for item in log.get("daemon") or []:
        if isinstance(item, dict):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.get("t") or 0))
            out.append("%s %s" % (stamp, item.get("line")))
    return "\n".join(out)


# -- shipping to many devices -------------------------------------------------------------------


class Lines:
    """One line per device as its shipment goes. On a terminal, a live block of one line per
    device (bar, bytes, state) redrawn in place; other lines are printed above it. Elsewhere (a
    log, a pipe), a line when a device starts, reconnects and ends."""

    BAR = 20

    def __init__(self, devices: list, quiet: bool, out, tty=None):
        self.out = out
        self.quiet = quiet
        self.tty = not quiet and (_isatty(out) if tty is None else tty)
        self.width = max(len(d.name) for d in devices)
        self.lock = threading.Lock()
        self.live = []  # the names in the live block, in order
        self.state = {}  # name -> {"text", "acked", "size"}
        self.drawn = 0  # lines of the block now on the screen
        self.last = 0.0

    def start(self, devices: list) -> None:
        with self.lock:
            self.live = [d.name for d in devices]
            for name in self.live:
                self.state[name] = {"text": "waiting", "acked": 0, "size": None}
            self.drawn = 0
            self._draw()

    def finish(self) -> None:
        with self.lock:
            self._draw()
            self.live, self.drawn = [], 0

    def note(self, text: str) -> None:
        if not self.quiet:
            with self.lock:
                self._above(text)

    def say(self, device, text: str) -> None:
        if self.quiet:
            return
        with self.lock:
            if self.tty and device.name in self.live:
                self.state[device.name]["text"] = text
                self._draw()
            else:
                self._above("%-*s  %s" % (self.width, device.name, text))

    def progress(self, device, acked: int, size: int) -> None:
        if not self.tty or device.name not in self.live:
            return
        with self.lock:
            self.state[device.name].update(acked=acked, size=size)
            if time.monotonic() - self.last >= 0.1 or acked == size:
                self._draw()

    def _above(self, text: str) -> None:
        if self.tty and self.drawn:
            self.out.write("\r\x1b[%dA\x1b[J%s\n" % (self.drawn, text))
            self.drawn = 0
            self._draw()
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def _draw(self) -> None:
        if not self.tty or not self.live:
            return
        import shutil

        columns = shutil.get_terminal_size((100, 24)).columns - 1
        parts = ["\r\x1b[%dA" % self.drawn] if self.drawn else []
        for name in self.live:
            parts.append("\x1b[2K%s\n" % self._line(name)[:columns])
        self.out.write("".join(parts))
        self.out.flush()
        self.drawn = len(self.live)
        self.last = time.monotonic()

    def _line(self, name: str) -> str:
        st = self.state[name]
        shown = ""
        if st["size"]:
            frac = min(1.0, st["acked"] / st["size"])
            full = int(frac * self.BAR)
            shown = "[%s%s] %3d%% %7.1f KiB  " % (
                "#" * full,
                "." * (self.BAR - full),
                100 * frac,
                st["size"] / 1024,
            )
        return "%-*s  %s%s" % (self.width, name, shown, st["text"])


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def ship_one(device, manifest: bytes, payload, options: dict, lines: Lines) -> dict:
    """Ship to one device; the outcome as a dict, never an exception (one device's failure is
    reported, not raised)."""
    from protocol.transports import transport

    started = time.monotonic()
    retries = {"n": 0}

    def reconnect(count, why):
        retries["n"] = count
        lines.say(device, "link lost (%s); reconnecting (%d)" % (why, count))

    opts = dict(options)
    opts.update(
        progress=lambda acked, size: lines.progress(device, acked, size),
        status=lambda info: None,
        on_reconnect=reconnect,
    )
    lines.say(device, "shipping to %s" % device.url)
    try:
        result = transport(device.url).ship(device.url, manifest, payload, opts)
    except BinsortError as e:
        out = {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 (a bug for one device must not stop the others)
        out = {"ok": False, "error": "internal error: %s: %s" % (type(e).__name__, e)}
    else:
        out = {"ok": True, "slot": result.get("slot")}
    out.update(seconds=round(time.monotonic() - started, 2), reconnects=retries["n"])
    if out["ok"]:
        tail = " after %d reconnects" % retries["n"] if retries["n"] else ""
        lines.say(device, "installed in slot %s (%.1f s%s)" % (out["slot"], out["seconds"], tail))
    else:
        lines.say(device, "FAILED: %s" % out["error"])
    return out


def ship_wave(devices, manifest, payload, options, lines, parallel, max_failures=None) -> dict:
    """Ship to `devices`, at most `parallel` at once; once `max_failures` have failed, no new
    device is started (those are marked skipped). {name: outcome}."""
    results = {}
    failed = {"n": 0}
    lock = threading.Lock()

    def one(device):
        with lock:
            if max_failures is not None and failed["n"] >= max_failures:
                results[device.name] = dict(NOT_STARTED)
                return
        out = ship_one(device, manifest, payload, options, lines)
        with lock:
            results[device.name] = out
            failed["n"] += 0 if out["ok"] else 1

    with concurrent.futures.ThreadPoolExecutor(max(1, min(parallel, len(devices)))) as pool:
        list(pool.map(one, devices))
    return {d.name: results[d.name] for d in devices}


def watch_canaries(devices, signed: dict, seconds: float, max_reject, lines, clock=time.monotonic):
    """Read the canaries' status endpoints for `seconds`; {name: None (healthy) or why not}.
    A canary has until the end of the watch to start the shipped model (a daemon swaps it in
    between frames); once it runs it, its boxes from then on are what is judged."""
    watch = {d.name: {"first": None, "last": None, "error": None, "why": None} for d in devices}
    end = clock() + seconds
    while True:
        for d in devices:
            w = watch[d.name]
            if w["why"]:
                continue
            try:
                status = read_status(d)
            except BinsortError as e:
                w["error"] = str(e)
                continue
            w["last"] = status
            if runs(status, signed):
                w["first"] = w["first"] or status
            w["why"] = judge(status, w["first"], signed, max_reject)
            if w["why"]:
                lines.say(d, "canary FAILED: %s" % w["why"])
        if clock() >= end or all(w["why"] for w in watch.values()):
            break
        time.sleep(min(WATCH_POLL_S, max(0.0, end - clock())))
    for d in devices:
        w = watch[d.name]
        if w["why"]:
            continue
        if w["last"] is None:
            w["why"] = "its status endpoint never answered in the watch (%s)" % w["error"]
        elif w["first"] is None:
            w["why"] = "it did not start the shipped model within the watch (%s)" % running(
                w["last"]
            )
        if w["why"]:
            lines.say(d, "canary FAILED: %s" % w["why"])
        else:
            boxes = w["last"].get("boxes", 0) - w["first"].get("boxes", 0)
            lines.say(d, "canary healthy: %d boxes decided in the watch" % boxes)
    return {d.name: watch[d.name]["why"] for d in devices}


def runs(status: dict, signed: dict) -> bool:
    model = status.get("model") or {}
    return (model.get("model_id"), model.get("version")) == (signed["model_id"], signed["version"])


def running(status: dict) -> str:
    model = status.get("model")
    return "it runs %s v%s" % (model.get("model_id"), model.get("version")) if model else "no model"


def judge(status: dict, first, signed: dict, max_reject) -> "str | None":
    """Why a canary is not healthy (None when it is, or is not yet running the shipped model:
    `first` is its first status that showed it running it, else None). Unhealthy: it ran the
    shipped model and no longer does (a rollback), it has a fault or no frames, or it rejected
    too many of the boxes decided since it started the shipped model."""
    if first is None:
        return None
    if not runs(status, signed):
        events = [e.get("event", "") for e in status.get("events") or [] if isinstance(e, dict)]
        rolled = [e for e in events if "rollback" in e]
        return "%s, not the shipped model%s" % (
            running(status),
            " (%s)" % rolled[-1] if rolled else "",
        )
    if status.get("fault"):
        return "fault: %s" % status["fault"]
    if status.get("state") in ("source error", "no model"):
        return "state %s: %s" % (status["state"], (status.get("source") or {}).get("last_error"))
    boxes = status.get("boxes", 0) - first.get("boxes", 0)
    rejects = status.get("rejects", 0) - first.get("rejects", 0)
    limit = max_reject if max_reject is not None else status.get("reject_alarm")
    if limit is not None and boxes >= MIN_BOXES and rejects / boxes > limit:
        return "rejected %d of %d boxes (%.1f%%, over %.1f%%)" % (
            rejects,
            boxes,
            100 * rejects / boxes,
            100 * limit,
        )
    return None


def rollout(devices, model_path, key_path, options: dict, plan: dict, out) -> dict:
    """Sign once and ship to every device, canaries first. `plan`: canary, watch, parallel,
    max_failures, max_reject, quiet, history. Returns the deployment record (also appended
    to the history); its `failed` lists the devices that did not install."""
    from host.ship import build_manifest

    manifest, payload, signed = build_manifest(
        model_path,
        key_path,
        options.get("version"),
        options.get("model_id"),
        options.get("rollback", False),
        None,
        options.get("expires_hours"),
    )
    entry = new_entry(
        "rollback" if options.get("rollback") else "ship",
        model=os.path.abspath(model_path),
        model_id=signed["model_id"],
        version=signed["version"],
        sha256=signed["sha256"],
        size=signed["size"],
        signed=signed,
        canary=plan["canary"],
        devices={},
        stopped=None,
    )
    lines = Lines(devices, plan["quiet"], out)
    canaries, rest = devices[: plan["canary"]], devices[plan["canary"] :]
    try:
        if canaries:
            lines.note("canary: %d of %d devices first" % (len(canaries), len(devices)))
            lines.start(canaries)
            entry["devices"].update(
                ship_wave(canaries, manifest, payload, options, lines, plan["parallel"])
            )
            lines.finish()
            bad = [d.name for d in canaries if not entry["devices"][d.name]["ok"]]
            if not bad and plan["watch"] > 0 and rest:
                lines.note("watching the canaries for %g s" % plan["watch"])
                verdicts = watch_canaries(
                    canaries, signed, plan["watch"], plan["max_reject"], lines
                )
                for name, why in verdicts.items():
                    if why:
                        entry["devices"][name].update(ok=False, error="canary: " + why)
                bad = [n for n, why in verdicts.items() if why]
            if bad and rest:
                entry["stopped"] = "canary %s failed: %s not shipped to" % (
                    ", ".join(bad),
                    devices_text(len(rest)),
                )
                for d in rest:
                    entry["devices"][d.name] = {
                        "ok": False,
                        "skipped": True,
                        "error": "not started",
                    }
        if rest and entry["stopped"] is None:
            if canaries:
                lines.note("canary healthy: on to the other %s" % devices_text(len(rest)))
            lines.start(rest)
            entry["devices"].update(
                ship_wave(
                    rest, manifest, payload, options, lines, plan["parallel"], plan["max_failures"]
                )
            )
    finally:
        lines.finish()
    entry["failed"] = [d.name for d in devices if not entry["devices"][d.name]["ok"]]
    record(plan["history"], entry, out)
    return entry


def devices_text(n: int) -> str:
    return "%d device%s" % (n, "" if n == 1 else "s")


def summary(entry: dict) -> str:
    results = entry["devices"]
    ok = [n for n, r in results.items() if r["ok"]]
    skipped = [n for n, r in results.items() if r.get("skipped")]
    failed = [n for n, r in results.items() if not r["ok"] and not r.get("skipped")]
    parts = ["%d installed" % len(ok)]
    if failed:
        parts.append("%d failed (%s)" % (len(failed), ", ".join(failed)))
    if skipped:
        parts.append("%d not started" % len(skipped))
    head = "%s %s version %d: " % (
        "rolled back to" if entry["action"] == "rollback" else "shipped",
        entry["model_id"],
        entry["version"],
    )
    text = head + ", ".join(parts) + " of %d devices" % len(results)
    if entry.get("stopped"):
        text += "; stopped: " + entry["stopped"]
    return text


# -- rollback to the other slot -----------------------------------------------------------------


class HeldPayload:
    """The payload of a rollback to a model the device holds: its length, never its bytes."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        raise BinsortError("the device no longer holds the model it was asked to go back to")


def rollback_manifest(status: dict, history: list, key_path: str, hours: float):
    """(manifest bytes, signed dict) of a signed rollback to the model in the device's other
    slot, bound to its store; BinsortError when there is none to go back to."""
    from host.ship import ROLLBACK_HOURS
    from protocol import manifest as mf
    from protocol.signing import load_private, sign_manifest

    store = status.get("store") or {}
    if "slots" not in store:
        raise BinsortError(
            "its status does not say what its slots hold (%s): update binsort-edge on it"
            % store.get("error", "no store section")
        )
    active = store.get("active")
    other = "b" if active == "a" else "a"
    rec = (store.get("slots") or {}).get(other)
    if not rec or not rec.get("sha256"):
        raise BinsortError("slot %s is empty: there is no model to go back to" % other)
    if rec.get("failed"):
        raise BinsortError("slot %s holds a model that failed: %s" % (other, rec["failed"]))
    if not rec.get("complete"):
        raise BinsortError("slot %s holds only a prefix of a stream" % other)
    shipped = shipped_manifest(history, rec["sha256"])
    if shipped is None:
        raise BinsortError(
            "slot %s holds %s v%s (SHA-256 %s...), which no deployment in this host's history "
            "shipped; send its file with binsort ship --rollback FILE"
            % (other, rec.get("model_id"), rec.get("version"), rec["sha256"][:16])
        )
    now = int(time.time())
    signed = {k: shipped[k] for k in ("format", "model_id", "kind", "version", "size", "sha256")}
    signed.update(
        chunks=shipped["chunks"],
        created=now,
        rollback=True,
        expires=now + int((hours or ROLLBACK_HOURS) * 3600),
    )
    if store.get("store_id"):
        signed["store"] = store["store_id"]
    mf.check_signed(signed)
    return sign_manifest(signed, load_private(key_path)), signed


def rollback(devices, key_path: str, options: dict, plan: dict, out) -> dict:
    """Swap every device back to the model in its other slot (see the module's doc)."""
    history = read_history(plan["history"])
    entry = new_entry("rollback", devices={})
    lines = Lines(devices, plan["quiet"], out)

    def one(device):
        try:
            status = read_status(device)
            manifest, signed = rollback_manifest(
                status, history, key_path, options.get("expires_hours")
            )
        except BinsortError as e:
            lines.say(device, "FAILED: %s" % e)
            return {"ok": False, "error": str(e)}
        lines.say(device, "back to %s v%d" % (signed["model_id"], signed["version"]))
        result = ship_one(device, manifest, HeldPayload(signed["size"]), options, lines)
        result.update(model_id=signed["model_id"], version=signed["version"])
        result["sha256"] = signed["sha256"]
        return result

    workers = max(1, min(plan["parallel"], len(devices)))
    lines.start(devices)
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(one, devices))
    finally:
        lines.finish()
    entry["devices"] = {d.name: r for d, r in zip(devices, outcomes, strict=True)}
    entry["failed"] = [d.name for d in devices if not entry["devices"][d.name]["ok"]]
    record(plan["history"], entry, out)
    return entry

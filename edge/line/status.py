"""The daemon's counters (persisted across restarts) and its HTTP status endpoint.

GET /status.json gives the status as JSON (the machine interface), with what the model store
holds (`store`: its id, the active slot and each slot's model by SHA-256); GET /log.json?lines=N
gives the daemon's and the store's last log lines (`binsort fleet logs`); GET / gives the operator's
page, refreshing itself, readable on a phone: station, state, model and version (a date when
it is a unix time), boxes a minute, every lane's count, the reject rate (red past
`reject_alarm`), boxes decided too late to divert, recent decisions and events, and the latest
model input (GET /frame.png) with what the model called it. Counters are written to
STATE_DIR/counters.json atomically every `save_every_s` (a minute) and at shutdown, and read
back at start.
"""

import html
import json
import math
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge.files import write_atomic
from protocol.errors import BinsortError

LATENCY_WINDOW = 2048


def _valid_counters(saved, defaults: dict) -> dict:
    """The saved counters whose type matches the defaults': a number for a number, a table of
    numbers for a table. A counters file with wrong types must not stop the line."""
    if not isinstance(saved, dict):
        return {}

    def number(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    out = {}
    for key, default in defaults.items():
        v = saved.get(key)
        if isinstance(default, dict):
            if isinstance(v, dict) and all(isinstance(k, str) and number(n) for k, n in v.items()):
                out[key] = v
        elif number(v):
            out[key] = type(default)(v)
    return out


class Counters:
    """Boxes per lane and label, rejects, frames, latencies, restarts, uptime."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "counters.json") if state_dir else None
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.data = {"boxes": 0, "lanes": {}, "labels": {}, "rejects": 0, "frames": 0}
        self.data.update({"restarts": 0, "uptime_before_s": 0.0, "source_errors": 0})
        if self.path and os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    saved = json.load(f)
                self.data.update(_valid_counters(saved, self.data))
                self.data["restarts"] += 1
            except (OSError, ValueError, TypeError, RuntimeError):
                pass  # a damaged counters file is not worth stopping the line for
        self.latencies = []  # seconds, the last LATENCY_WINDOW frames
        self.at = 0

    def frame(self, seconds: float) -> None:
        with self.lock:
            self.data["frames"] += 1
            if len(self.latencies) < LATENCY_WINDOW:
                self.latencies.append(seconds)
            else:
                self.latencies[self.at] = seconds
                self.at = (self.at + 1) % LATENCY_WINDOW

    def box(self, lane: str, label: str, rejected: bool) -> None:
        with self.lock:
            d = self.data
            d["boxes"] += 1
            d["lanes"][lane] = d["lanes"].get(lane, 0) + 1
            d["labels"][label] = d["labels"].get(label, 0) + 1
            d["rejects"] += int(rejected)

    def source_error(self) -> None:
        with self.lock:
            self.data["source_errors"] += 1

    def latency_ms(self) -> dict:
        with self.lock:
            lat = sorted(self.latencies)
        if not lat:
            return {"n": 0, "p50": None, "p99": None, "max": None}

        def pct(p):
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 3)

        return {"n": len(lat), "p50": pct(0.5), "p99": pct(0.99), "max": round(1000 * lat[-1], 3)}

    def snapshot(self) -> dict:
        with self.lock:
            out = json.loads(json.dumps(self.data))
        up = time.monotonic() - self.started
        out["uptime_s"] = round(up, 1)
        out["uptime_total_s"] = round(out.pop("uptime_before_s") + up, 1)
        return out

    def save(self) -> None:
        if not self.path:
            return
        snap = self.snapshot()
        snap["uptime_before_s"] = snap.pop("uptime_total_s")
        snap.pop("uptime_s")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomic(self.path, json.dumps(snap, indent=1).encode())


def readable_seconds(seconds) -> str:
    """3 d 4 h, 2 h 5 min, 7 min 3 s, 12 s."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if s >= size:
            return "%d %s %d %s" % (s // size, unit, s % size // subsize, sub)
    return "%d min %d s" % (s // 60, s % 60) if s >= 60 else "%d s" % s


def version_text(version) -> str:
    """A version that is a unix time (what `binsort ship` gives by default) as its date."""
    if isinstance(version, int) and version >= 1_000_000_000:
        return "%d (%s)" % (version, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(version)))
    return str(version)


def png(grey) -> bytes:
    """A grey uint8 image as a PNG, scaled 3x (nearest) so a 96-pixel input is visible."""
    import io

    from PIL import Image

    img = Image.fromarray(grey)
    img = img.resize((img.width * 3, img.height * 3), Image.NEAREST)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:60em}"
    "th{text-align:left;padding-right:1em}td,th{border-bottom:1px solid #ddd;padding:.3em}"
    ".alarm{background:#c62828;color:#fff;font-weight:bold}.ok{background:#e8f5e9}"
    ".warn{background:#fff3cd}section{margin-top:1.2em}img{image-rendering:pixelated}"
    "figure{margin:0}"
)


def timed_by(timing: dict) -> str:
    """How the diverters' moments were found: the photo-eye, or without one the pixels at the
    centre line and the model's frames where the pixels could not tell."""
    if timing.get("from") == "eye":
        return "the photo-eye"
    if timing.get("from") == "model":
        return "the model's frames"
    return "the pixels %s, the model's frames %s" % (
        timing.get("by_image", 0),
        timing.get("by_model", 0),
    )


def render_html(status: dict) -> str:
    """The operator's page: every value that comes from a peer or a file is escaped."""
    esc = html.escape

    def row(k, v, cls=None, ident=None):
        attrs = (" class=%s" % cls if cls else "") + (" id=%s" % ident if ident else "")
        return "<tr%s><th>%s</th><td>%s</td></tr>" % (attrs, esc(str(k)), esc(str(v)))

    model = status.get("model") or {}
    lat = status.get("latency_ms") or {}
    source = status.get("source") or {}
    act = status.get("actuator") or {}
    state = status.get("state")
    rate = status.get("reject_rate")
    rows = [
        row("state", state, "ok" if state == "running" else "alarm", "state"),
        row(
            "model",
            "%s version %s, slot %s%s"
            % (
                model.get("model_id"),
                version_text(model.get("version")),
                model.get("slot"),
                ", on trial" if model.get("trial") else "",
            )
            if model
            else "none: actuator safe",
            None if model else "alarm",
            "model",
        ),
        row("engine", status.get("engine")),
        row("boxes a minute", status.get("boxes_per_minute"), None, "rate"),
        row("boxes", status.get("boxes"), None, "boxes"),
        row(
            "rejected",
            "%s (%s; alarm above %.0f%%)"
            % (
                status.get("rejects"),
                "%.1f%%" % (100 * rate) if rate is not None else "no boxes yet",
                100 * (status.get("reject_alarm") or 0),
            ),
            "alarm" if status.get("alarm") else None,
            "rejects",
        ),
        row(
            "decided too late to divert",
            act.get("late", 0),
            "warn" if act.get("late") else None,
            "late",
        ),
        row("boxes timed by", timed_by(status.get("timing") or {}), None, "timing"),
        row("latency p50 / p99", "%s / %s ms" % (lat.get("p50"), lat.get("p99"))),
        row("frames", status.get("frames")),
        row(
            "uptime",
            "%s (in all %s, %s restarts)"
            % (
                readable_seconds(status.get("uptime_s")),
                readable_seconds(status.get("uptime_total_s")),
                status.get("restarts"),
            ),
            None,
            "uptime",
        ),
        row(
            "camera",
            "%s (%s errors%s)"
            % (
                source.get("url"),
                status.get("source_errors"),
                ", last: %s" % source["last_error"] if source.get("last_error") else "",
            ),
            "alarm" if source.get("last_error") else None,
            "source",
        ),
    ]
    for what, err in sorted((status.get("io_errors") or {}).items()):
        rows.append(row("%s errors" % what, "%d, last: %s" % (err["count"], err["last"]), "warn"))
    lanes = "".join(
        row(lane, n, None, "lane-" + "".join(c for c in lane if c.isalnum()))
        for lane, n in sorted((status.get("lanes") or {}).items())
    )
    events = "".join(
        "<li>%s %s</li>"
        % (esc(time.strftime("%H:%M:%S", time.localtime(e.get("t", 0)))), esc(str(e.get("event"))))
        for e in reversed(status.get("events") or [])
    )
    decisions = "".join(
        "<tr><td>%s</td><td>%s</td><td>%.2f</td><td>%s</td></tr>"
        % (
            esc(str(d.get("seq"))),
            esc(str(d.get("label"))),
            d.get("confidence") or 0,
            esc(str(d.get("lane"))),
        )
        for d in reversed(status.get("last_decisions") or [])
    )
    frame = status.get("frame")
    view = (
        "<figure><img id=frame src=frame.png alt='model input' width=288"
        " onload='this.dataset.shown=this.naturalWidth'>"
        "<figcaption id=frame-label>%s (%.0f%%)</figcaption></figure>"
        % (esc(str(frame["label"])), 100 * frame["confidence"])
        if frame
        else "<p id=frame-label>no frame yet</p>"
    )
    station = esc(str(status.get("station") or "binsort"))
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<meta http-equiv=refresh content=3><title>%s: binsort</title><style>%s</style></head>"
        "<body><h1 id=station>%s</h1><table id=summary>%s</table>"
        "<section><h2>boxes per lane</h2><table id=lanes>%s</table></section>"
        "<section><h2>what the model sees</h2>%s</section>"
        "<section><h2>recent decisions</h2><table id=decisions><tr><th>box</th><th>label</th>"
        "<th>confidence</th><th>lane</th></tr>%s</table></section>"
        "<section><h2>events</h2><ul id=events>%s</ul></section>"
        "<p><a href=status.json>status.json</a></p></body></html>"
        % (station, PAGE_STYLE, station, "".join(rows), lanes, view, decisions, events)
    )


STATUS_TIMEOUT = 5.0  # seconds a status connection may take to send its request
STATUS_CONNECTIONS = 16  # status connections handled at once; more are closed at once


class _CappedServer(ThreadingHTTPServer):
    """A threading HTTP server that handles at most STATUS_CONNECTIONS requests at once and
    survives any error of one connection (an idle or hostile client holds a thread for at
    most STATUS_TIMEOUT seconds and never a file descriptor beyond the cap)."""

    daemon_threads = True
    request_queue_size = 16

    def __init__(self, *args, **kwargs):
        self.slots = threading.BoundedSemaphore(STATUS_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: close at once rather than queue
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # noqa: BLE001 (no thread for it: drop this connection only)
            self.slots.release()
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        pass  # a client's broken connection is not the line's business


STATUS_CACHE_S = 0.25  # one status computed for all the requests within this long
LOG_LINES = 100  # lines GET /log.json gives unless ?lines=N (at most LOG_LINES_MAX)
LOG_LINES_MAX = 500


def _lines_asked(path: str) -> int:
    """?lines=N of a /log.json request, within 0..LOG_LINES_MAX; LOG_LINES otherwise."""
    from urllib.parse import parse_qs, urlsplit

    asked = parse_qs(urlsplit(path).query).get("lines", [""])[0]
    return min(int(asked), LOG_LINES_MAX) if asked.isdigit() else LOG_LINES


class StatusServer:
    def __init__(self, listen: str, get_status, get_frame=None, get_log=None):
        host, _, port = listen.rpartition(":")
        cache = {"at": -1e9, "status": None}
        lock = threading.Lock()

        def current() -> dict:
            """The status, computed at most every STATUS_CACHE_S whoever asks how often, so
            page views cannot take a Pi Zero's one core from the frame loop."""
            with lock:
                now = time.monotonic()
                if now - cache["at"] >= STATUS_CACHE_S:
                    cache["status"], cache["at"] = get_status(), now
                return cache["status"]

        class Handler(BaseHTTPRequestHandler):
            timeout = STATUS_TIMEOUT  # applied to the connection's socket by StreamRequestHandler

            def do_GET(self):
                path = self.path.split("?")[0]
                if path in ("/status.json", "/status"):
                    body, ctype = json.dumps(current()).encode(), "application/json"
                elif path in ("/", "/index.html"):
                    body, ctype = render_html(current()).encode(), "text/html; charset=utf-8"
                elif path == "/frame.png" and get_frame is not None and get_frame() is not None:
                    body, ctype = get_frame(), "image/png"
                elif path == "/log.json" and get_log is not None:
                    body = json.dumps(get_log(_lines_asked(self.path))).encode()
                    ctype = "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        try:
            self.server = _CappedServer((host or "0.0.0.0", int(port)), Handler)
        except OSError as e:
            raise BinsortError(
                "status endpoint cannot listen on %s: %s" % (listen, e.strerror)
            ) from None
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="status", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

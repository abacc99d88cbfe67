"""The daemon's counters (persisted across restarts) and its HTTP status endpoint.

GET /status.json gives the status as JSON; GET / gives the same as a small HTML page that
refreshes itself, readable on a phone. Counters are written to STATE_DIR/counters.json
atomically every few seconds and at shutdown, and read back at start.
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


def render_html(status: dict) -> str:
    def row(k, v):
        return "<tr><th>%s</th><td>%s</td></tr>" % (html.escape(str(k)), html.escape(str(v)))

    model = status.get("model") or {}
    lat = status.get("latency_ms") or {}
    rows = [
        row("state", status.get("state")),
        row(
            "model",
            "%s v%s (slot %s%s)"
            % (
                model.get("model_id"),
                model.get("version"),
                model.get("slot"),
                ", on trial" if model.get("trial") else "",
            )
            if model
            else "none — actuator safe",
        ),
        row("engine", status.get("engine")),
        row("boxes", status.get("boxes")),
        row("rejects", status.get("rejects")),
        row("latency p50 / p99", "%s / %s ms" % (lat.get("p50"), lat.get("p99"))),
        row("frames", status.get("frames")),
        row(
            "uptime",
            "%s s (total %s s, %s restarts)"
            % (status.get("uptime_s"), status.get("uptime_total_s"), status.get("restarts")),
        ),
        row(
            "source",
            "%s (%s errors%s)"
            % (
                status.get("source", {}).get("url"),
                status.get("source_errors"),
                ", last: %s" % status["source"]["last_error"]
                if status.get("source", {}).get("last_error")
                else "",
            ),
        ),
    ]
    lanes = "".join(row(k, v) for k, v in sorted((status.get("lanes") or {}).items()))
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<meta http-equiv=refresh content=5><title>binsort</title>"
        "<style>body{font-family:sans-serif;margin:1em}th{text-align:left;padding-right:1em}"
        "td,th{border-bottom:1px solid #ddd;padding:.3em}</style></head><body>"
        "<h1>binsort sorter</h1><table>%s</table><h2>boxes per lane</h2><table>%s</table>"
        "<p><a href=status.json>status.json</a></p></body></html>" % ("".join(rows), lanes)
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


class StatusServer:
    def __init__(self, listen: str, get_status):
        host, _, port = listen.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            timeout = STATUS_TIMEOUT  # applied to the connection's socket by StreamRequestHandler

            def do_GET(self):
                status = get_status()
                if self.path.split("?")[0] in ("/status.json", "/status"):
                    body, ctype = json.dumps(status).encode(), "application/json"
                elif self.path.split("?")[0] in ("/", "/index.html"):
                    body, ctype = render_html(status).encode(), "text/html; charset=utf-8"
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

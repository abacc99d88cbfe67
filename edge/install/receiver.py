"""The device side of shipping: a session receiver (protocol.session) writing into a SlotStore.

`StoreSink` is what the session stores through. It refuses a manifest before writing a byte
(SlotStore.verify), resumes from the payload's `.partial` file, checks every chunk against the
manifest's hash as it completes (a bad chunk is cut off and the session aborted), makes the
file durable at every chunk boundary, installs each `.pranc` prefix whose host-measured accuracy
meets the policy and each stage of a `.bsc` cascade as soon as its chunk is verified, and
installs the complete payload at DONE.
"""

import os
import threading
import time

from edge.install.store import Rejected, SlotStore
from protocol import cascade, delta
from protocol.chunks import ChunkVerifier, chunk_start
from protocol.errors import FormatError, bounded
from protocol.records import ends_on_record
from protocol.session import Receiver, pump, resume_again

DONE_RECORD = 44  # a .bsc or .bsd DONE record: tag, length, SHA-256, CRC


class StoreSink:
    def __init__(self, store: SlotStore, min_accuracy=None, log=None, on_installed=None):
        self.store = store
        self.on_installed = on_installed or (lambda result: None)
        self.min_accuracy = min_accuracy  # None: install .pranc prefixes only when complete
        self.log = log or (lambda line: None)
        self.manifest = None
        self.file = None
        self.size = 0

    def offer(self, manifest_bytes: bytes) -> int:
        m = self.store.verify(manifest_bytes)
        path, self.file, good = self.store.partial(m)  # open, locked, at `good`
        self.manifest, self.path, self.size = m, path, m.size
        self.offset = self.resumed_from = good  # bytes before it came in earlier sessions
        start = chunk_start(m.signed["chunks"], good)
        pending = b""
        if start < good:
            self.file.seek(start)
            pending = self.file.read(good - start)
            self.file.seek(good)
        self.verifier = ChunkVerifier(m.signed["chunks"], good, pending)
        self.log(
            "offer %s v%d (%s, %d bytes): %s at byte %d"
            % (m.model_id, m.version, m.kind, m.size, "resuming" if good else "starting", good)
        )
        return good

    def write(self, data: bytes) -> list:
        """Append in-order bytes; a status dict for every `.pranc` prefix installed."""
        events = []
        at = 0
        while at < len(data):
            try:
                take, done = self.verifier.feed(data[at:])
            except FormatError as e:
                start = self.offset = self.verifier.start  # the bad chunk is cut off
                self.file.truncate(start)
                self.file.seek(start)
                self._sync(start)
                m = self.manifest
                if start < self.resumed_from:
                    # the chunk held bytes an earlier session left, unverified: they may be the
                    # fault (a peer that replayed the manifest and sent garbage, then left), so
                    # this sender is asked to go on from the chunk's start, not refused
                    why = "an earlier session's bytes failed: %s" % e
                    self.store.log_refusal(
                        "drop %s v%d from byte %d: %s" % (m.model_id, m.version, start, why)
                    )
                    raise Rejected(resume_again(why, start)) from None
                self.store.log_refusal("reject %s v%d: %s" % (m.model_id, m.version, e))
                raise Rejected(str(e)) from None
            self.file.write(data[at : at + take])
            self.offset += take
            at += take
            if done is not None:
                event = self._chunk_done(done)
                if event:
                    events.append(event)
        return events

    def _chunk_done(self, index: int):
        end = self.offset
        self._sync(end)
        acc = self.manifest.accuracy(index)
        if end < self.size and self._prefix_wanted(end, acc):
            slot = self.store.install(self.manifest, self.path, length=end)
            self.log(
                "installed prefix of %d bytes (host accuracy %s) in slot %s"
                % (end, "not measured" if acc is None else "%.4f" % acc, slot)
            )
            return {"installed": end, "accuracy": acc, "slot": slot}
        return None

    def _prefix_wanted(self, end: int, acc) -> bool:
        kind = self.manifest.kind
        if kind == "pranc":
            return self.min_accuracy is not None and acc is not None and acc >= self.min_accuracy
        if self.size - end == DONE_RECORD:
            return False  # the last stage or step: only DONE follows, installed as a whole
        # every stage of a cascade and every step of a delta, as soon as it is whole
        last = {"cascade": (cascade.MAGIC, b"STAG"), "delta": (delta.MAGIC, b"STEP")}.get(kind)
        if last is None:
            return False
        self.file.flush()
        with open(self.path, "rb") as f:
            return ends_on_record(f, end, *last)

    def _sync(self, offset: int) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.store.record_progress(self.manifest, offset)

    def suspend(self) -> None:
        if self.file is not None and not self.file.closed:
            self._sync(self.offset)
            self.file.close()

    def finish(self) -> dict:
        m = self.manifest
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        try:
            slot = self.store.install(m, self.path, move=True)
        except Rejected:
            self.store.drop_partial(m)
            raise
        self.store.drop_partial(m)
        self.log("installed %s v%d in slot %s" % (m.model_id, m.version, slot))
        result = {"ok": True, "slot": slot, "model_id": m.model_id, "version": m.version}
        result["kind"] = m.kind
        self.on_installed(result)
        return result


IDLE_TIMEOUT = 60.0  # seconds without a valid frame before a connection is dropped
SESSION_DEADLINE = 900.0  # seconds one TCP connection may last, however busy
FIRST_FRAME = 10.0  # seconds a new TCP peer has to send its first valid frame
FIRST_FRAME_MAX = 3600.0  # past an hour it is a slip (and timers overflow past ~9.2e9 s)
MAX_SESSIONS = 4  # TCP connections served at once; more are closed at once


def serve_link(
    link,
    store: SlotStore,
    min_accuracy=None,
    log=None,
    persistent=False,
    once=False,
    deadline=None,
    first_frame=None,
    on_receiver=None,
):
    """Receive sessions on one link until it closes (or, unless `persistent`, goes a minute
    without a valid frame; or after `deadline` seconds; with `once`, soon after a model is
    installed). `on_receiver(receiver)` hears the session's state machine before it runs.
    Returns the RESULT of every model installed."""
    results = []

    def open_sink():
        return StoreSink(store, min_accuracy, log, on_installed=results.append)

    until = (lambda: bool(results)) if once else None
    receiver = Receiver(open_sink)
    if on_receiver is not None:
        on_receiver(receiver)
    pump(link, receiver, IDLE_TIMEOUT, time.monotonic, persistent, until, deadline, first_frame)
    return results


def serve_listener(
    listener,
    store: SlotStore,
    min_accuracy=None,
    log=None,
    stop=None,
    once=False,
    max_sessions: int = MAX_SESSIONS,
    on_health=None,
    on_beat=None,
    first_frame: float = FIRST_FRAME,
):
    """Accept connections on a listening transport (protocol.transports.tcp) until `stop()`
    says so or the listener is closed (or, with `once`, a model is installed), serving up to
    `max_sessions` at once, each in its own thread with an absolute deadline. When every place
    is taken, a newcomer takes the place of the oldest session that has not had an offer
    accepted (make_room): peers without a key cannot crowd out one with a signed model; only
    when every session is moving a signed model is a newcomer closed at once. Whatever one
    connection raises is logged (in one bounded line) and ends that connection only.
    `on_health(dict)` hears the counts after every change, and `on_beat()` is called at least
    twice a second while the accept loop runs (a watchdog can tell it from a wedged one).
    A new peer that sends no valid frame within `first_frame` seconds is let go.
    Returns the RESULTs of the session that installed a model with `once`, else []."""
    log = log or (lambda line: None)
    stop = stop or (lambda: False)
    lock = threading.Lock()
    health = {"active": 0, "served": 0, "refused_busy": 0, "evicted": 0, "failed": 0}
    sessions = {}  # link -> {"since", "receiver"}: the connections being served
    installed = []

    def report():
        if on_health is not None:
            on_health(dict(health))

    def serve(link):
        def seen(receiver):
            with lock:
                if link in sessions:
                    sessions[link]["receiver"] = receiver

        try:
            results = serve_link(
                link,
                store,
                min_accuracy,
                log,
                deadline=SESSION_DEADLINE,
                first_frame=first_frame,
                on_receiver=seen,
            )
            if results:
                installed.extend(results)
        except Exception as e:  # noqa: BLE001 (one peer, whatever it did, ends only itself)
            with lock:
                health["failed"] += 1
            log("%s: %s" % (link.name, bounded(e)))
        finally:
            link.close()
            with lock:
                if sessions.pop(link, None) is not None:
                    health["active"] -= 1
                health["served"] += 1
            report()

    def make_room() -> bool:
        """With every place taken, end the oldest session that has not yet had an offer
        accepted (its peer proved nothing: no trusted signature); True if one was ended.
        Sessions that are transferring a signed model are never ended for a newcomer."""
        unproven = [
            (info["since"], link)
            for link, info in sessions.items()
            if info["receiver"] is None or info["receiver"].offset is None
        ]
        if not unproven:
            return False
        _, victim = min(unproven, key=lambda pair: pair[0])
        del sessions[victim]
        health["active"] -= 1
        health["evicted"] += 1
        abort = getattr(victim, "abort", None)
        if abort is not None:
            abort()
        return True

    while not stop() and not (once and installed):
        if on_beat is not None:
            on_beat()
        try:
            link = listener.accept(0.5)
        except (OSError, ValueError):  # closed under us (select() on a closed socket: ValueError)
            break
        if link is None:
            continue
        with lock:
            busy = health["active"] >= max_sessions and not make_room()
            if busy:
                health["refused_busy"] += 1
            else:
                health["active"] += 1
                sessions[link] = {"since": time.monotonic(), "receiver": None}
        if busy:
            log("%s: refused, %d sessions already" % (link.name, max_sessions))
            link.close()
            report()
            continue
        log("connection from %s" % link.name)
        report()
        threading.Thread(target=serve, args=(link,), daemon=True, name="session").start()
    return list(installed) if once else []

"""The device side of shipping: a session receiver (protocol.session) writing into a SlotStore.

`StoreSink` is what the session stores through. It refuses a manifest before writing a byte
(SlotStore.verify), resumes from the payload's `.partial` file, checks every chunk against the
manifest's hash as it completes (a bad chunk is cut off and the session aborted), makes the
file durable at every chunk boundary, installs each `.pranc` prefix whose host-measured accuracy
meets the policy as soon as its chunk is verified, and installs the complete payload at DONE.
"""

import hashlib
import os
import time

from edge.install.store import Rejected, SlotStore
from protocol.session import Receiver, pump


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
        path, good = self.store.partial(m)
        self.manifest, self.path, self.size = m, path, m.size
        self.file = open(path, "r+b")  # noqa: SIM115 (open for the session; suspend/finish close it)
        self.file.seek(good)
        self.offset = good
        self.chunks = m.signed["chunks"]
        self.chunk = 0
        while self.chunks[self.chunk][0] <= good and self.chunk < len(self.chunks) - 1:
            self.chunk += 1
        start = self.chunks[self.chunk - 1][0] if self.chunk else 0
        self.hasher = hashlib.sha256()
        if start < good:
            with open(path, "rb") as f:
                f.seek(start)
                self.hasher.update(f.read(good - start))
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
            end, digest = self.chunks[self.chunk][:2]
            take = min(len(data) - at, end - self.offset)
            piece = data[at : at + take]
            self.file.write(piece)
            self.hasher.update(piece)
            self.offset += take
            at += take
            if self.offset == end:
                event = self._chunk_done(end, digest)
                if event:
                    events.append(event)
        return events

    def _chunk_done(self, end: int, digest: str):
        start = self.chunks[self.chunk - 1][0] if self.chunk else 0
        if self.hasher.hexdigest() != digest:
            self.file.truncate(start)
            self._sync(start)
            m = self.manifest
            self.store.log(
                "reject %s v%d: chunk ending at %d fails its hash" % (m.model_id, m.version, end)
            )
            raise Rejected("tampered payload: the chunk ending at byte %d fails its hash" % end)
        self._sync(end)
        self.hasher = hashlib.sha256()
        index = self.chunk
        self.chunk = min(self.chunk + 1, len(self.chunks) - 1)
        acc = self.manifest.accuracy(index)
        if (
            self.manifest.kind == "pranc"
            and end < self.size
            and self.min_accuracy is not None
            and acc is not None
            and acc >= self.min_accuracy
        ):
            slot = self.store.install(self.manifest, self.path, length=end)
            self.log(
                "installed prefix of %d bytes (host accuracy %.4f) in slot %s" % (end, acc, slot)
            )
            return {"installed": end, "accuracy": acc, "slot": slot}
        return None

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


def serve_link(link, store: SlotStore, min_accuracy=None, log=None, persistent=False, once=False):
    """Receive sessions on one link until it closes (or, unless `persistent`, goes quiet for a
    minute; with `once`, soon after a model is installed). Returns the RESULT of every model
    installed."""
    results = []

    def open_sink():
        return StoreSink(store, min_accuracy, log, on_installed=results.append)

    until = (lambda: bool(results)) if once else None
    pump(link, Receiver(open_sink), 60.0, time.monotonic, persistent, until)
    return results

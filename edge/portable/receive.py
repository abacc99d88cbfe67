"""Receive a model from a transfer-session byte stream with the portable protocol code; runs
under MicroPython and CPython.

    micropython edge/portable/receive.py STREAM OUT [--unsigned-ok]

STREAM holds the bytes a sender wrote to the line (a capture, or what a UART delivered). They
are fed to protocol.frames.FrameDecoder in small pieces, as a serial port delivers them, and the
frames go to protocol.session.Receiver. The offered manifest is parsed and checked by
protocol.manifest, every chunk is checked against its SHA-256 as it completes, and the payload
against the manifest's SHA-256 at DONE. The payload is then written to OUT. The last line on
stdout is JSON: the RESULT or ERROR the receiver answered, the reply frames, and the frames
dropped as damaged.

Signatures: Ed25519 needs the `cryptography` package, which MicroPython does not have. Without
it the manifest is refused with a clear error. `--unsigned-ok` accepts it unverified, for
bench tests of the data path only; the daemon never does that.
"""

import json
import sys

from protocol import frames as fr
from protocol.chunks import ChunkVerifier
from protocol.errors import BinsortError, FormatError
from protocol.manifest import parse_manifest, sha256_hex
from protocol.session import Receiver


class CheckingSink:
    def __init__(self, unsigned_ok: bool):
        self.unsigned_ok = unsigned_ok
        self.data = bytearray()
        self.signature = None

    def offer(self, manifest_bytes: bytes) -> int:
        self.manifest = parse_manifest(manifest_bytes)
        try:
            import cryptography  # noqa: F401
        except ImportError:
            if not self.unsigned_ok:
                raise BinsortError(
                    "this board cannot check Ed25519 signatures (no cryptography package): "
                    "refusing the model"
                ) from None
            self.signature = "not checked (--unsigned-ok)"
        else:
            raise BinsortError("use binsort-edge receive where cryptography is installed")
        self.size = self.manifest.size
        self.verifier = ChunkVerifier(self.manifest.signed["chunks"])
        return 0

    def write(self, data) -> list:
        at = 0
        while at < len(data):
            take, _ = self.verifier.feed(data[at:])  # FormatError: a chunk fails its hash
            self.data += bytes(data[at : at + take])
            at += take
        return []

    def suspend(self) -> None:
        pass

    def finish(self) -> dict:
        digest = sha256_hex(bytes(self.data))
        if digest != self.manifest.sha256:
            raise FormatError("tampered payload: its SHA-256 does not match the manifest")
        return {
            "ok": True,
            "model_id": self.manifest.model_id,
            "version": self.manifest.version,
            "sha256": digest,
            "signature": self.signature,
        }


def receive(stream: bytes, unsigned_ok: bool, piece: int = 61) -> "tuple":
    """(summary dict, payload bytes or None)."""
    sink = CheckingSink(unsigned_ok)
    receiver = Receiver(lambda: sink)
    decoder = fr.FrameDecoder()
    replies, outcome = [], None
    for at in range(0, len(stream), piece):
        for frame in decoder.push(stream[at : at + piece]):
            for reply in receiver.on_frame(frame, at / 1000.0):
                replies.append(fr.NAMES[reply.kind])
                if reply.kind in (fr.RESULT, fr.ERROR) and outcome is None:
                    outcome = reply
    summary = {"replies": replies, "dropped": decoder.dropped}
    if outcome is not None and outcome.kind == fr.RESULT:
        summary["result"] = json.loads(bytes(outcome.payload).decode())
        return summary, bytes(sink.data)
    summary["error"] = bytes(outcome.payload).decode() if outcome else "the stream ended early"
    return summary, None


def main(argv: list) -> int:
    args = [a for a in argv if a != "--unsigned-ok"]
    if len(args) != 2:
        print("usage: portable_receive STREAM OUT [--unsigned-ok]", file=sys.stderr)
        return 2
    try:
        with open(args[0], "rb") as f:
            stream = f.read()
    except OSError as e:
        print("portable-receive: error: cannot read %s: %s" % (args[0], e), file=sys.stderr)
        return 2
    summary, payload = receive(stream, "--unsigned-ok" in argv)
    if payload is not None:
        with open(args[1], "wb") as f:
            f.write(payload)
    print(json.dumps(summary))
    return 0 if payload is not None else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

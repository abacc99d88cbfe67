"""`binsort ship`: sign a manifest for a model file and send both to a device by URL.

The model is read and checked here first (a damaged file is never shipped). Its manifest
(protocol.manifest) cuts a `.bnn` into 64 KiB chunks, a `.pranc` stream at its chunk records and
a `.bsc` cascade or `.bsd` delta at the end of each stage (and every 64 KiB), with the accuracy
the host measured for each usable prefix, so the device can verify and use every prefix as it
arrives. The transport is chosen by the URL's scheme (protocol.transports).
"""

import os
import time

from protocol import manifest as mf
from protocol.errors import BinsortError, FormatError
from protocol.signing import load_private, sign_manifest


def read_payload(path: str) -> "tuple[bytes, str, list, list]":
    """(bytes, kind, chunk ends, chunk accuracies or None) of a model file, checked."""
    from protocol.bnn import read_bnn, read_model_file
    from protocol.kinds import model_kind

    with_data = {}

    def parse(data: bytes):
        with_data["data"] = data
        if model_kind(data) == "pranc":
            from protocol.pranc import StreamReader

            reader = StreamReader()
            events = reader.feed(data)
            if not reader.done or reader.buf:
                raise BinsortError("%s is not a complete .pranc stream" % path)
            chunks = [e[1] for e in events if e[0] == "chunk"]
            ends = [c.end for c in chunks[:-1]] + [len(data)]
            return "pranc", ends, [c.accuracy for c in chunks]
        if model_kind(data) == "cascade":
            return cascade_chunks(data)
        if model_kind(data) == "delta":
            return delta_chunks(data)
        read_bnn(data)
        return "bnn", mf.fixed_chunk_ends(len(data), mf.SHIP_CHUNK), None

    kind, ends, accuracies = read_model_file(path, parse)
    return with_data["data"], kind, ends, accuracies


def cascade_chunks(data: bytes) -> "tuple[str, list, list]":
    """A whole `.bsc` cut at the end of every stage (and every 64 KiB), so that each stage ends
    on a signed chunk the device can install as soon as it is verified; the chunk that ends a
    stage carries the accuracy the host measured for it."""
    from protocol.cascade import read_cascade

    cascade = read_cascade(data)
    if not cascade.done:
        raise FormatError("not a complete .bsc cascade: it ends without DONE")
    return "cascade", *_cut_at(len(data), {s.end: s.accuracy for s in cascade.stages})


def delta_chunks(data: bytes) -> "tuple[str, list, list]":
    """A whole `.bsd` cut like a cascade, at the end of every step (each step is an update)."""
    from protocol.delta import read_steps

    steps, done = read_steps(data)
    if not done:
        raise FormatError("not a complete .bsd delta: it ends without DONE")
    return "delta", *_cut_at(len(data), steps)


def _cut_at(size: int, marks: dict) -> "tuple[list, list]":
    """Chunk ends every 64 KiB and at each end in `marks` ({end: accuracy or None}), and the
    accuracy of each chunk (that of the mark it ends on, else None)."""
    ends, start = [], 0
    for stop in sorted(marks) + [size]:
        if stop > start:
            ends += [start + e for e in mf.fixed_chunk_ends(stop - start, mf.SHIP_CHUNK)]
        start = stop
    return ends, [marks.get(e) for e in ends]


def wire_bytes(manifest: bytes, end: int) -> int:
    """Bytes a clean line carries for a session to deliver the first `end` payload bytes: the
    sender's HELLO, the manifest's OFFER frames and the DATA frames, each as encoded on the line
    (protocol.frames: COBS, header, CRC, delimiter). Answers from the device not counted."""
    import struct

    from protocol import frames as fr
    from protocol.session import FRAME_PAYLOAD, OFFER_HEAD, OFFER_HEAD_SIZE

    hello = b'{"max_payload":1024,"proto":[1],"window":8}'
    total = len(fr.encode_frame(fr.Frame(fr.HELLO, 1, 0, hello)))
    piece = FRAME_PAYLOAD - OFFER_HEAD_SIZE
    for at in range(0, len(manifest), piece):
        body = struct.pack(OFFER_HEAD, len(manifest)) + manifest[at : at + piece]
        total += len(fr.encode_frame(fr.Frame(fr.OFFER, 1, at, body)))
    for at in range(0, end, FRAME_PAYLOAD):
        data = b"\x55" * min(FRAME_PAYLOAD, end - at)
        total += len(fr.encode_frame(fr.Frame(fr.DATA, 1, at, data)))
    return total


ROLLBACK_HOURS = 24  # a signed rollback is refused this long after it was made


def signed_part(payload: bytes, kind: str, ends: list, accuracies, model_id: str, version=None):
    """The signed fields every manifest has, for `payload` cut into chunks ending at `ends`;
    the version defaults to the time it is made."""
    import hashlib

    now = int(time.time())
    return {
        "format": mf.FORMAT,
        "model_id": model_id,
        "kind": kind,
        "version": now if version is None else version,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "chunks": mf.chunk_table(payload, ends, accuracies),
        "created": now,
    }


def build_manifest(
    path: str,
    key_path: str,
    version=None,
    model_id=None,
    rollback=False,
    store_id=None,
    expires_hours=None,
):
    """(signed manifest bytes, payload bytes, the signed dict). A rollback expires after
    `expires_hours` (default ROLLBACK_HOURS); `store_id` binds the manifest to one store."""
    key = load_private(key_path)
    payload, kind, ends, accuracies = read_payload(path)
    model_id = model_id or os.path.splitext(os.path.basename(path))[0]
    signed = signed_part(payload, kind, ends, accuracies, model_id, version)
    if kind == "delta":
        from protocol.delta import base_sha256

        signed["base"] = base_sha256(payload)
    if rollback:
        signed["rollback"] = True
    hours = ROLLBACK_HOURS if rollback and expires_hours is None else expires_hours
    if hours is not None:
        if not hours > 0:
            raise BinsortError("--expires-hours must be positive")
        signed["expires"] = signed["created"] + int(hours * 3600)
    if store_id is not None:
        signed["store"] = store_id
    try:
        mf.check_signed(signed)
    except FormatError as e:
        raise BinsortError(str(e)) from None
    return sign_manifest(signed, key), payload, signed


def ship(path: str, url: str, key_path: str, options: dict) -> dict:
    """Ship a model file; returns the device's verdict, with the manifest's signed part under
    "signed". Raises BinsortError on refusal."""
    from protocol.transports import transport

    module = transport(url)
    version = options.get("version")
    if version is not None and version < 1:
        raise BinsortError("--version must be a positive integer")
    manifest, payload, signed = build_manifest(
        path,
        key_path,
        version,
        options.get("model_id"),
        options.get("rollback", False),
        options.get("store_id"),
        options.get("expires_hours"),
    )
    result = module.ship(url, manifest, payload, options)
    result.setdefault("version", signed["version"])
    result["signed"] = signed  # what the deployment history keeps (host.fleet)
    return result

"""Signed manifests (docs/format.md "Manifest"): what a payload is, and who vouches for it.

A manifest is JSON: {"signed": {...}, "signatures": [{"keyid": ..., "sig": ...}]}. The signature
is Ed25519 over the canonical bytes of "signed" (keys sorted, no spaces, UTF-8). "signed" names
the model, its kind and monotonic version, the payload's size and SHA-256, and the end offset and
SHA-256 of every chunk, so a receiver can check each chunk as it lands and a prefix of a `.pranc`
stream is verified before it is used. This module parses and checks the structure (standard
library only); protocol.signing makes and checks the signatures.
"""

import binascii
import hashlib
import json

from protocol.errors import FormatError

FORMAT = "binsort-manifest/1"
KINDS = ("bnn", "pranc", "cascade", "delta")
MAX_MANIFEST = 1 << 20
BNN_CHUNK = 4096
# the longest chunk `binsort ship` cuts: a resumed transfer re-reads the unfinished chunk into
# memory to go on hashing it, and each chunk costs about 80 bytes of manifest, which on a weak
# link is paid before the first byte of the model (a first stage is one chunk)
SHIP_CHUNK = 65536
FIELDS = ("format", "model_id", "kind", "version", "size", "sha256", "chunks", "created")


def canonical(obj) -> bytes:
    """The bytes a signature covers: JSON with sorted keys and no spaces, built here (not by
    json.dumps options, which MicroPython lacks) from null, booleans, integers, ASCII strings,
    lists and objects only, so every implementation produces the same bytes."""
    return _encode(obj).encode()


def _encode(v) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        if not all(32 <= ord(ch) < 127 for ch in v):
            raise FormatError("not a valid manifest: strings must be printable ASCII")
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ",".join(_encode(x) for x in v) + "]"
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str):
                raise FormatError("not a valid manifest: object keys must be strings")
        return "{" + ",".join(_encode(k) + ":" + _encode(v[k]) for k in sorted(v)) + "}"
    raise FormatError("not a valid manifest: %s values are not allowed" % type(v).__name__)


def sha256_hex(data) -> str:
    """SHA-256 as lowercase hex (MicroPython's hashlib has no hexdigest)."""
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError("not a valid manifest: " + what)


def _brief(value, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: what a message may echo of a peer's input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_hex(s, n: int) -> bool:
    if not isinstance(s, str) or len(s) != n:
        return False
    try:
        int(s, 16)
    except ValueError:
        return False
    return s == s.lower()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Manifest:
    """A parsed manifest. `digest` (SHA-256 of the canonical signed part) names it: the edge
    records the digests it installed so that a replayed manifest is refused."""

    def __init__(self, signed: dict, signatures: list, raw: bytes):
        self.signed = signed
        self.signatures = signatures
        self.raw = raw
        self.body = canonical(signed)
        self.digest = sha256_hex(self.body)
        self.model_id, self.kind = signed["model_id"], signed["kind"]
        self.version, self.size = signed["version"], signed["size"]
        self.sha256, self.created = signed["sha256"], signed["created"]
        self.rollback = bool(signed.get("rollback", False))
        self.expires = signed.get("expires")  # unix seconds after which it is refused
        self.store = signed.get("store")  # the one store it may install into, or any
        self.base = signed.get("base")  # a delta: the SHA-256 of the .bnn it applies to

    def chunk_ends(self) -> list:
        return [c[0] for c in self.signed["chunks"]]

    def accuracy(self, index: int):
        """The host-measured accuracy (a fraction) of the prefix ending with chunk `index`
        (pranc), or None. The manifest holds it in 1/10000, as an integer: floats print
        differently across Python implementations and would break the canonical bytes."""
        c = self.signed["chunks"][index]
        return c[2] / 10000 if len(c) > 2 and c[2] is not None else None


def check_signed(signed) -> None:
    _check(isinstance(signed, dict), "'signed' is not an object")
    for f in FIELDS:
        _check(f in signed, "field %r is missing" % f)
    fmt = signed["format"]
    _check(fmt == FORMAT, "format %s, this binsort reads %s" % (_brief(fmt), FORMAT))
    mid = signed["model_id"]
    _check(
        isinstance(mid, str) and 0 < len(mid) <= 128 and all(32 <= ord(ch) < 127 for ch in mid),
        "model_id must be 1-128 printable ASCII characters",
    )
    kind = signed["kind"]
    _check(
        isinstance(kind, str) and kind in KINDS,
        "kind %s (choose from %s)" % (_brief(kind), ", ".join(KINDS)),
    )
    v, size = signed["version"], signed["size"]
    _check(_is_int(v) and 1 <= v < 1 << 63, "version must be a positive integer")
    _check(_is_int(size) and 0 < size < 1 << 32, "size must be a positive 32-bit integer")
    _check(_is_int(signed["created"]) and signed["created"] >= 0, "created must be unix seconds")
    _check(_is_hex(signed["sha256"], 64), "sha256 must be 64 lowercase hex digits")
    _check(isinstance(signed.get("rollback", False), bool), "rollback must be true or false")
    expires = signed.get("expires")
    _check(expires is None or (_is_int(expires) and expires > 0), "expires must be unix seconds")
    _check(signed.get("store") is None or _is_hex(signed["store"], 16), "store is 16 hex digits")
    base = signed.get("base")
    _check(
        (kind == "delta") == (base is not None),
        "a delta, and only a delta, names its base model (base)",
    )
    _check(base is None or _is_hex(base, 64), "base must be 64 lowercase hex digits")
    _check(
        not signed.get("rollback") or expires is not None,
        "a rollback manifest must expire (an old version must not be installable for ever)",
    )
    chunks = signed["chunks"]
    _check(isinstance(chunks, list) and chunks, "chunks must be a non-empty list")
    prev = 0
    for c in chunks:
        _check(isinstance(c, list) and len(c) in (2, 3), "each chunk is [end, sha256(, accuracy)]")
        _check(_is_int(c[0]) and prev < c[0] <= size, "chunk ends must increase up to size")
        _check(_is_hex(c[1], 64), "chunk sha256 must be 64 lowercase hex digits")
        if len(c) == 3:
            a = c[2]
            _check(a is None or (_is_int(a) and 0 <= a <= 10000), "chunk accuracy (1/10000)")
        prev = c[0]
    _check(prev == size, "the last chunk must end at size")


def parse_manifest(data: bytes) -> Manifest:
    """Parse and check a manifest's structure (not its signature: see protocol.signing)."""
    _check(len(data) <= MAX_MANIFEST, "%d bytes" % len(data))
    try:
        obj = json.loads(bytes(data).decode())
    except (ValueError, UnicodeError) as e:
        raise FormatError("not a valid manifest: not JSON (%s)" % _brief(str(e), 80)) from None
    except (RuntimeError, MemoryError):  # nested past the recursion limit
        raise FormatError("not a valid manifest: JSON nested too deep") from None
    _check(isinstance(obj, dict), "not a JSON object")
    signed, sigs = obj.get("signed"), obj.get("signatures", [])
    check_signed(signed)
    _check(isinstance(sigs, list), "'signatures' is not a list")
    for s in sigs:
        _check(
            isinstance(s, dict) and _is_hex(s.get("keyid"), 16) and _is_hex(s.get("sig"), 128),
            "each signature is {keyid: 16 hex digits, sig: 128 hex digits}",
        )
    return Manifest(signed, sigs, bytes(data))


def chunk_table(payload: bytes, ends: list, accuracies=None) -> list:
    """[[end, sha256(, accuracy in 1/10000)], ...] for the chunks of `payload` that end at
    `ends`; `accuracies` are fractions or None."""
    rows, start = [], 0
    for i, end in enumerate(ends):
        row = [end, sha256_hex(payload[start:end])]
        if accuracies is not None:
            a = accuracies[i]
            row.append(None if a is None else int(round(a * 10000)))
        rows.append(row)
        start = end
    return rows


def fixed_chunk_ends(size: int, chunk: int = BNN_CHUNK) -> list:
    return list(range(chunk, size, chunk)) + [size]

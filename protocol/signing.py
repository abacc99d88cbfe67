"""Ed25519 keys and manifest signatures (docs/format.md "Keys" and "Manifest").

Key files: the private key is PKCS#8 PEM (mode 0600); the public key is one line,
`ed25519 <base64 of the 32 raw bytes> [comment]`, so a board without an ASN.1 parser can read it.
A key id is the first 16 hex digits of the SHA-256 of the raw public key. The `cryptography`
package is imported only here and only when a key is made, used or checked.
"""

import base64
import binascii
import hashlib
import os

from protocol.errors import BinsortError, FormatError
from protocol.manifest import Manifest, canonical, parse_manifest

PUB_PREFIX = "ed25519"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BinsortError(
            "Ed25519 needs the cryptography package: pip install cryptography"
        ) from None
    return ed25519, serialization, InvalidSignature


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def public_line(raw_public: bytes, comment: str = "") -> str:
    line = "%s %s" % (PUB_PREFIX, base64.b64encode(raw_public).decode())
    return (line + " " + comment if comment else line) + "\n"


def parse_public(text: str, where: str = "public key") -> bytes:
    """The 32 raw bytes of a `signing.pub` line; FormatError if it is not one."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != PUB_PREFIX:
        raise FormatError("%s is not an 'ed25519 <base64>' line" % where)
    try:
        raw = base64.b64decode(parts[1])
    except (ValueError, binascii.Error):
        raise FormatError("%s: the key is not valid base64" % where) from None
    if len(raw) != 32:
        raise FormatError("%s: an Ed25519 public key has 32 bytes, this has %d" % (where, len(raw)))
    return raw


def read_public(path: str) -> bytes:
    try:
        with open(path) as f:
            return parse_public(f.read(), path)
    except (OSError, UnicodeError) as e:
        raise BinsortError("cannot read public key %s: %s" % (path, e)) from None


def new_key_pair(out_dir: str, comment: str = "") -> "tuple[str, str]":
    """Write DIR/signing.key (0600) and DIR/signing.pub; refuse to overwrite a key."""
    ed25519, serialization, _ = _crypto()
    key_path = os.path.join(out_dir, "signing.key")
    pub_path = os.path.join(out_dir, "signing.pub")
    for p in (key_path, pub_path):
        if os.path.exists(p):
            raise BinsortError("%s exists; move it away or choose another --out" % p)
    os.makedirs(out_dir, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with open(pub_path, "w") as f:
        f.write(public_line(raw, comment))
    return key_path, pub_path


def load_private(path: str):
    ed25519, serialization, _ = _crypto()
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise BinsortError("cannot read signing key %s: %s" % (path, e.strerror)) from None
    except (ValueError, TypeError):
        raise BinsortError("%s is not an unencrypted PEM private key" % path) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BinsortError("%s is not an Ed25519 key (make one with: binsort keys new)" % path)
    return key


def sign_manifest(signed: dict, key) -> bytes:
    """The manifest's bytes: `signed` and one signature by `key` (an Ed25519PrivateKey)."""
    _, serialization, _ = _crypto()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = key.sign(canonical(signed)).hex()
    return canonical({"signed": signed, "signatures": [{"keyid": key_id(raw), "sig": sig}]})


def verify_manifest(data: bytes, trusted: list) -> Manifest:
    """Parse a manifest and check that one of the `trusted` raw public keys signed it.
    FormatError names what is wrong: not a manifest, unsigned, or no trusted signature."""
    manifest = parse_manifest(data)
    if not manifest.signatures:
        raise FormatError("the manifest is unsigned")
    ed25519, _, invalid = _crypto()
    by_id = {key_id(raw): raw for raw in trusted}
    known, seen = [], set()
    for s in manifest.signatures:  # one check per trusted key: a flood of bogus signatures
        if s["keyid"] in by_id and s["keyid"] not in seen:  # naming it costs one, not each
            seen.add(s["keyid"])
            known.append(s)
    if not known:
        raise FormatError(
            "the manifest is signed by key %s, which this device does not trust"
            % manifest.signatures[0]["keyid"]
        )
    for s in known:
        pub = ed25519.Ed25519PublicKey.from_public_bytes(by_id[s["keyid"]])
        try:
            pub.verify(bytes.fromhex(s["sig"]), manifest.body)
            return manifest
        except invalid:
            continue
    raise FormatError("the manifest's signature does not verify (tampered manifest)")

"""Manifests and keys: signatures, tampering, structure checks, and a fuzz of the parser."""

import contextlib
import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import manifest as mf
from protocol.errors import BinsortError, FormatError
from protocol.signing import (
    key_id,
    load_private,
    new_key_pair,
    parse_public,
    read_public,
    sign_manifest,
    verify_manifest,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    pairs = []
    for name in ("one", "two"):
        key, pub = new_key_pair(str(root / name), comment=name)
        pairs.append((load_private(key), read_public(pub), key, pub))
    return pairs


def signed_for(payload: bytes, version: int = 1) -> dict:
    return {
        "format": mf.FORMAT,
        "model_id": "line-3",
        "kind": "bnn",
        "version": version,
        "size": len(payload),
        "sha256": __import__("hashlib").sha256(payload).hexdigest(),
        "chunks": mf.chunk_table(payload, mf.fixed_chunk_ends(len(payload), 100)),
        "created": 1790000000,
    }


def test_keys_new_writes_a_private_key_only_its_owner_can_read(keys, tmp_path):
    _, raw, key_path, pub_path = keys[0]
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    with open(pub_path) as f:
        line = f.read()
    assert line.startswith("ed25519 ") and line.strip().endswith("one")
    assert parse_public(line) == raw and len(raw) == 32
    with pytest.raises(BinsortError, match="exists"):
        new_key_pair(os.path.dirname(key_path))


def test_a_signed_manifest_verifies_with_its_key_only(keys):
    (k1, raw1, *_), (k2, raw2, *_) = keys
    data = sign_manifest(signed_for(b"x" * 250), k1)
    m = verify_manifest(data, [raw2, raw1])  # any trusted key may be the one
    assert m.version == 1 and m.chunk_ends() == [100, 200, 250]
    assert m.signatures[0]["keyid"] == key_id(raw1)
    with pytest.raises(FormatError, match="does not trust"):
        verify_manifest(data, [raw2])


def test_tampered_unsigned_and_forged_manifests_are_refused(keys):
    (k1, raw1, *_), (k2, _, *_) = keys
    data = sign_manifest(signed_for(b"x" * 250), k1)
    obj = json.loads(data)
    obj["signed"]["version"] = 99
    with pytest.raises(FormatError, match="does not verify"):
        verify_manifest(json.dumps(obj).encode(), [raw1])
    obj = json.loads(data)
    obj["signatures"] = []
    with pytest.raises(FormatError, match="unsigned"):
        verify_manifest(json.dumps(obj).encode(), [raw1])
    forged = json.loads(sign_manifest(signed_for(b"x" * 250), k2))
    forged["signatures"][0]["keyid"] = key_id(raw1)  # claims to be key one
    with pytest.raises(FormatError, match="does not verify"):
        verify_manifest(json.dumps(forged).encode(), [raw1])


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.pop("sha256"), "missing"),
        (lambda s: s.update(kind="onnx"), "kind"),
        (lambda s: s.update(version=0), "version"),
        (lambda s: s.update(version=True), "version"),
        (lambda s: s.update(size=-4), "size"),
        (lambda s: s["chunks"].reverse(), "increase"),
        (lambda s: s["chunks"].pop(), "end at size"),
        (lambda s: s.update(format="binsort-manifest/9"), "format"),
        (lambda s: s.update(rollback="yes"), "rollback"),
        (lambda s: s["chunks"][0].__setitem__(1, "00"), "sha256"),
    ],
)
def test_structural_errors_are_named(edit, message):
    signed = signed_for(b"y" * 250)
    edit(signed)
    with pytest.raises(FormatError, match=message):
        mf.parse_manifest(json.dumps({"signed": signed, "signatures": []}).encode())


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_parser_fuzz_raises_only_format_errors(data):
    with contextlib.suppress(FormatError):
        mf.parse_manifest(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(st.sampled_from(mf.FIELDS + ("rollback",)), json_values)
def test_parser_fuzz_of_field_values_raises_only_format_errors(field, value):
    signed = signed_for(b"z" * 250)
    signed[field] = value
    try:
        m = mf.parse_manifest(json.dumps({"signed": signed, "signatures": []}).encode())
    except FormatError:
        return
    assert m.signed[field] == value  # accepted values are ones the checks allow


def test_a_flood_of_signatures_naming_a_trusted_key_costs_one_check(keys):
    """Thousands of bogus signatures under the trusted key id: one verification for that key,
    not one each, so a valid signature hidden behind them is not reached either."""
    (k1, raw1, *_), _ = keys
    good = json.loads(sign_manifest(signed_for(b"x" * 250), k1))
    bogus = {"keyid": good["signatures"][0]["keyid"], "sig": "0" * 128}
    flood = dict(good, signatures=[bogus] * 3000 + good["signatures"])
    with pytest.raises(FormatError, match="does not verify"):
        verify_manifest(json.dumps(flood).encode(), [raw1])
    assert verify_manifest(json.dumps(good).encode(), [raw1]).version == 1


def test_a_signed_rollback_expires_a_day_after_it_is_made_unless_told(tmp_path, tiny_model):
    """host.ship.build_manifest: `binsort ship --rollback` signs an expiry (24 h by default,
    --expires-hours otherwise) and binds it to a store when given one."""
    from host.ship import ROLLBACK_HOURS, build_manifest
    from protocol.signing import new_key_pair

    key, _ = new_key_pair(str(tmp_path / "k"))
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    _, payload, plain = build_manifest(str(model), key, version=3)
    assert "expires" not in plain and "rollback" not in plain and plain["version"] == 3
    assert plain["size"] == len(payload) and plain["model_id"] == "m"
    _, _, back = build_manifest(str(model), key, 3, rollback=True, store_id="0123456789abcdef")
    assert back["rollback"] and back["store"] == "0123456789abcdef"
    assert back["expires"] == back["created"] + ROLLBACK_HOURS * 3600
    _, _, short = build_manifest(str(model), key, 3, rollback=True, expires_hours=0.5)
    assert short["expires"] == short["created"] + 1800
    with pytest.raises(BinsortError, match="--expires-hours must be positive"):
        build_manifest(str(model), key, 3, rollback=True, expires_hours=0)

"""The portable core: the pure-Python engine equals the numpy engine bit for bit, under CPython
and under real MicroPython (the WebAssembly port, run with node); the frame decoder, manifest
parser, chunk hash checks and the PRANC hash run there too; bad input is a clean error there."""

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest

from edge.engine import NumpyEngine
from edge.imaging.box_images import render
from edge.imaging.preprocess import preprocess
from edge.portable.engine import PortableEngine, read_pgm, write_pgm
from protocol import frames as fr
from protocol import manifest as mf
from protocol import prng
from protocol.bnn import read_bnn
from protocol.errors import FormatError
from protocol.session import OFFER_HEAD
from tests.shipkit import EDGE, ROOT

MPY = os.path.join(ROOT, "tools", "micropython.mjs")
CLASSIFY = os.path.join(ROOT, "tools", "micropython-classify")
LABELS = ["F06", "K11", "S19", "V22", "empty"]


@pytest.fixture(scope="module", autouse=True)
def micropython_installed():
    package = os.path.join(
        ROOT,
        ".micropython",
        "node_modules",
        "@micropython",
        "micropython-webassembly-pyscript",
        "micropython.mjs",
    )
    if not os.path.exists(package):
        pytest.fail(
            "MicroPython is not installed: run tools/setup-system (the README's test command does)"
        )


def box_inputs(n, size):
    """n rendered box-code frames (every label) preprocessed to the model's input."""
    return np.stack(
        [
            preprocess(np.asarray(render(7, "test", LABELS[i % 5], i, 100)), size, size)
            for i in range(n)
        ]
    )


def test_portable_engine_equals_numpy_under_cpython(lively_tiny_model, lively_bcnn_model):
    for (_, data), n in ((lively_tiny_model, 50), (lively_bcnn_model, 3)):
        model = read_bnn(data)
        h, _ = model.input_shape
        images = box_inputs(n, h)
        want = NumpyEngine(model).scores(images)
        assert len({tuple(r) for r in want.tolist()}) == n
        portable = PortableEngine(model)
        got = [portable.scores(im.tobytes()) for im in images]
        assert np.array_equal(np.array(got), want)
        assert portable.self_test() == []


def _write_inputs(tmp_path, images):
    paths = []
    for i, im in enumerate(images):
        p = tmp_path / ("in%02d.pgm" % i)
        p.write_bytes(write_pgm(im.shape[1], im.shape[0], im.tobytes()))
        paths.append(str(p))
    return paths


def _micropython_rows(tmp_path, model_path, images) -> list:
    """tools/micropython-classify on `images` (written as PGM files): its JSON line for each."""
    out = subprocess.run(
        [CLASSIFY, str(model_path), *_write_inputs(tmp_path, images)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def lively_tiny():
    """An untrained tiny net with BatchNorm at its defaults: its scores vary from image to
    image (the randomised fixture saturates on these inputs)."""
    import torch

    from host.models import BinaryNet
    from host.pack import pack_model
    from tests.conftest import checkpoint_for

    torch.manual_seed(4)
    return pack_model(checkpoint_for("tiny"), BinaryNet("tiny", 5).eval())


def test_micropython_engine_gives_the_numpy_scores_on_50_images(tmp_path, lively_tiny):
    model_path = tmp_path / "tiny.bnn"
    model_path.write_bytes(lively_tiny)
    model = read_bnn(lively_tiny)
    images = box_inputs(50, model.input_shape[0])
    want = NumpyEngine(model).scores(images)
    assert len({tuple(r) for r in want}) == 50  # the images really differ for this model
    rows = _micropython_rows(tmp_path, model_path, images)
    assert len(rows) == 50
    assert np.array_equal(np.array([r["int_scores"] for r in rows]), want)
    # and the same lines as binsort-edge classify, but for the path
    edge_rows = subprocess.run(
        EDGE
        + ["classify", "--views", "1", "--model", str(model_path), *[r["path"] for r in rows[:5]]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for mine, theirs in zip(rows[:5], map(json.loads, edge_rows.splitlines()), strict=True):
        assert {k: v for k, v in mine.items()} == theirs


def test_pgm_command_writes_the_model_input(tmp_path, tiny_model):
    model_path = tmp_path / "tiny.bnn"
    model_path.write_bytes(tiny_model[1])
    frame = tmp_path / "frame.png"
    render(3, "test", "K11", 1, 100).save(frame)
    out = subprocess.run(
        EDGE + ["pgm", "--model", str(model_path), str(frame), "--out", str(tmp_path / "in.pgm")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    w, h, pixels = read_pgm((tmp_path / "in.pgm").read_bytes())
    want = preprocess(np.asarray(render(3, "test", "K11", 1, 100)), 32, 32)
    assert (w, h) == (32, 32) and pixels == want.tobytes()


def test_bad_pgm_and_corrupted_model_are_clean_errors_under_micropython(tmp_path, tiny_model):
    bad = bytearray(tiny_model[1])
    bad[len(bad) // 2] ^= 0x10
    (tmp_path / "bad.bnn").write_bytes(bytes(bad))
    (tmp_path / "good.bnn").write_bytes(tiny_model[1])
    img = _write_inputs(tmp_path, box_inputs(1, 32))[0]
    (tmp_path / "big.pgm").write_bytes(write_pgm(40, 40, bytes(1600)))
    (tmp_path / "p2.pgm").write_bytes(b"P2\n1 1\n255\n0\n")
    cases = [
        ([str(tmp_path / "bad.bnn"), img], "CRC"),
        ([str(tmp_path / "good.bnn"), str(tmp_path / "big.pgm")], "the model takes 32x32"),
        ([str(tmp_path / "good.bnn"), str(tmp_path / "p2.pgm")], "binary PGM"),
    ]
    for args, message in cases:
        out = subprocess.run([CLASSIFY, *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stderr.startswith("micropython-classify: error:")


def test_stats_report_time_and_peak_heap_under_micropython(tmp_path, tiny_model):
    (tmp_path / "tiny.bnn").write_bytes(tiny_model[1])
    img = _write_inputs(tmp_path, box_inputs(2, 32))
    out = subprocess.run(
        [CLASSIFY, "--stats", str(tmp_path / "tiny.bnn"), *img],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert lines[-2]["images"] == 2 and lines[-2]["ms_per_image"] > 0
    assert lines[-1]["peak_heap_bytes"] > len(tiny_model[1])  # at least the model's own bytes


def _stream(payload: bytes, damage=None) -> bytes:
    signed = {
        "format": mf.FORMAT,
        "model_id": "m",
        "kind": "bnn",
        "version": 3,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "chunks": mf.chunk_table(payload, mf.fixed_chunk_ends(len(payload))),
        "created": 1,
    }
    manifest = mf.canonical({"signed": signed, "signatures": []})
    import struct

    s = 77
    out = bytearray(b"line noise\x00\x13\x00")
    out += fr.encode_frame(fr.Frame(fr.HELLO, s, 0, b'{"proto":[1],"max_payload":1024,"window":8}'))
    for at in range(0, len(manifest), 1000):
        piece = struct.pack(OFFER_HEAD, len(manifest)) + manifest[at : at + 1000]
        out += fr.encode_frame(fr.Frame(fr.OFFER, s, at, piece))
    for at in range(0, len(payload), 1024):
        frame = fr.encode_frame(fr.Frame(fr.DATA, s, at, payload[at : at + 1024]))
        if at == 2048:  # a copy damaged on the line, then the frame again
            bad = bytearray(frame)
            bad[30] ^= 0x04
            out += bad
        out += frame
    out += fr.encode_frame(fr.Frame(fr.DONE, s, len(payload)))
    if damage:
        out = damage(out)
    return bytes(out)


def _receive(tmp_path, stream, *flags):
    (tmp_path / "stream.bin").write_bytes(stream)
    target = tmp_path / "got.bnn"
    out = subprocess.run(
        [
            "node",
            MPY,
            os.path.join(ROOT, "edge", "portable", "receive.py"),
            str(tmp_path / "stream.bin"),
            str(target),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, json.loads(out.stdout.splitlines()[-1]), target


def test_the_receiver_runs_under_micropython_and_checks_every_chunk(tmp_path, tiny_model):
    out, summary, target = _receive(tmp_path, _stream(tiny_model[1]), "--unsigned-ok")
    assert out.returncode == 0, out.stderr
    assert summary["dropped"] == 3  # two runs of noise and the damaged copy
    assert summary["result"]["sha256"] == hashlib.sha256(tiny_model[1]).hexdigest()
    assert target.read_bytes() == tiny_model[1]
    assert summary["replies"][:2] == ["hello", "accept"] and summary["replies"][-1] == "result"


def test_micropython_refuses_what_it_cannot_verify_or_what_was_tampered(tmp_path, tiny_model):
    out, summary, target = _receive(tmp_path, _stream(tiny_model[1]))
    assert out.returncode == 2 and "cannot check Ed25519 signatures" in summary["error"]
    assert not target.exists()
    payload = bytearray(tiny_model[1])
    honest = _stream(bytes(payload))
    payload[5000] ^= 1  # the bytes change after the manifest was made
    forged = _stream(bytes(payload))
    manifest_end = honest.index(fr.encode_frame(fr.Frame(fr.DATA, 77, 0, bytes(payload[:1024]))))
    mixed = honest[:manifest_end] + forged[manifest_end:]
    out, summary, target = _receive(tmp_path, mixed, "--unsigned-ok")
    end = min(8192, len(payload))  # the chunk that holds byte 5000 (chunks of 8 KiB)
    assert (
        out.returncode == 2 and "chunk ending at byte %d fails its hash" % end in summary["error"]
    )
    assert not target.exists()


def test_pranc_hash_under_micropython_matches_the_published_vectors(tmp_path):
    from tests.test_pranc_basis import doc_vectors

    hashes, _ = doc_vectors()
    script = tmp_path / "h.py"
    script.write_text(
        "import json\nfrom protocol import prng\n"
        "print(json.dumps([prng.hash32(*a) for a in %s]))\n"
        "print(json.dumps(prng.sign_bits(7, 2, 5, 100)))\n"
        % json.dumps([list(a) for a, _ in hashes])
    )
    out = subprocess.run(["node", MPY, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got, bits = [json.loads(x) for x in out.stdout.splitlines()]
    assert got == [want for _, want in hashes]
    assert bits == prng.sign_bits(7, 2, 5, 100)


def test_pgm_reader_names_what_is_wrong():
    assert read_pgm(b"P5\n# a comment\n2 1\n255\n\x01\x02") == (2, 1, b"\x01\x02")
    for data, message in [
        (b"P6\n1 1\n255\n\x00\x00\x00", "P5"),
        (b"P5\n2 2\n255\n\x00", "truncated"),
        (b"P5\n1 1\n65535\n\x00\x00", "8-bit"),
        (b"P5\n1", "ends early"),
    ]:
        with pytest.raises(FormatError, match=message):
            read_pgm(data)


def test_micropython_pools_by_three_as_numpy_does(tmp_path, monkeypatch):
    """A p x p max-pool wider than 2x2 (format 1.4, bcnn144m's stage 2), on the input layer and
    on a binary conv, over maps whose sides 3 does not divide: the same integers as numpy."""
    import torch

    import host.archs as ha
    from host.models import BinaryNet
    from host.pack import pack_model
    from tests.conftest import checkpoint_for

    spec = {"input": 40, "stem": {"cout": 16, "k": 3, "stride": 2, "pool": 1}}
    monkeypatch.setitem(ha.ARCHS, "three", dict(spec, convs=[(16, 3), (24, 1)], dense=[16]))
    torch.manual_seed(4)
    data = pack_model(checkpoint_for("three"), BinaryNet("three", 5).eval())
    model = read_bnn(data)
    assert [layer.pool for layer in model.layers[:3]] == [1, 3, 1]
    model_path = tmp_path / "three.bnn"
    model_path.write_bytes(data)
    images = box_inputs(10, 40)
    want = NumpyEngine(model).scores(images)
    assert len({tuple(r) for r in want.tolist()}) >= 8  # the images really differ here
    rows = _micropython_rows(tmp_path, model_path, images)
    assert np.array_equal(np.array([r["int_scores"] for r in rows]), want)

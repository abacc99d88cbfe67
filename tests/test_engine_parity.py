"""Every engine computes the same integers: native C kernel (one and several threads), numpy,
and the portable pure-Python engine, on random and rendered inputs; the edge picks the native
engine where it is built, says which it uses, and falls back to numpy without it."""

import json
import os
import subprocess

import numpy as np
import pytest

from edge.engine import NumpyEngine, load_engine, native
from edge.portable.engine import PortableEngine
from host.archs import ARCHS
from protocol.bnn import read_bnn
from tests.conftest import random_inputs
from tests.shipkit import EDGE, ROOT


@pytest.fixture(scope="module", autouse=True)
def kernel_built():
    if not native.available():
        pytest.fail("the native kernel is not built (pip install -e . with a C compiler)")


@pytest.mark.parametrize(
    "which", ["lively_tiny_model", "lively_bcnn_model", "lively_default_model"]
)
def test_native_numpy_and_portable_engines_give_identical_scores(which, request):
    model = read_bnn(request.getfixturevalue(which)[1])
    h, _ = model.input_shape
    images = random_inputs(24, h, seed=5)
    want = NumpyEngine(model).scores(images)
    assert len({tuple(r) for r in want.tolist()}) == 24  # every image scores differently
    best = native.popcount_path()
    try:
        for path in sorted({"scalar", best}):  # every popcount path this CPU has
            assert native.popcount_path(path) == path
            assert np.array_equal(native.NativeEngine(model).scores(images), want), path
            assert np.array_equal(native.NativeEngine(model, threads=3).scores(images), want)
            assert np.array_equal(native.NativeEngine(model, chunk=5).scores(images), want)
    finally:
        native.popcount_path("best")
    portable = PortableEngine(model)
    assert [portable.scores(im.tobytes()) for im in images[:3]] == want[:3].tolist()


def test_native_engine_passes_the_golden_self_test_and_is_the_default(tmp_path, bcnn_model):
    path = tmp_path / "m.bnn"
    path.write_bytes(bcnn_model[1])
    engine = load_engine(str(path))
    assert engine.name == "native" and engine.self_test() == []


def test_classify_says_which_engine_and_falls_back_to_numpy(tmp_path, tiny_model):
    from edge.imaging.box_images import render

    path = tmp_path / "m.bnn"
    path.write_bytes(tiny_model[1])
    render(1, "test", "F06", 0, 100).save(tmp_path / "a.png")
    rows = {}
    # the CPU's best popcount path: AVX-512 VPOPCNTDQ where it has it, else the scalar one
    runs = (
        ("best", "native (%s)" % native.popcount_path(), {}),
        ("scalar", "native (scalar)", {"BINSORT_POPCOUNT": "scalar"}),
        ("numpy", "numpy", {"BINSORT_ENGINE": "numpy"}),
    )
    for key, name, env in runs:
        out = subprocess.run(
            EDGE + ["classify", "--verbose", "--model", str(path), str(tmp_path / "a.png")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, **env),
        )
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip() == "binsort-edge: engine %s" % name
        rows[key] = json.loads(out.stdout)
    assert rows["best"] == rows["scalar"] == rows["numpy"]


@pytest.mark.parametrize(
    "stem_pool, pools", [(2, (1, 2, 1)), (1, (1, 2, 1)), (1, (3, 1, 1)), (3, (1, 1, 1))]
)
def test_every_engine_agrees_on_odd_channel_counts_and_map_sizes(monkeypatch, stem_pool, pools):
    """Packed pixels of 1, 2, 3 and 5 bytes (each takes another patch-copy path), maps with odd
    sides under 2x2 and 3x3 pooling (11x11 pooled by 3 leaves two rows and columns over), and a
    first layer too narrow for the 16-channel SIMD stem; with the input layer pooled, and not
    (as bcnn96h's)."""
    from host.models import ARCHS
    from host.pack import pack_model
    from host.reference import reference_scores
    from tests.conftest import checkpoint_for, lively_model

    monkeypatch.setitem(
        ARCHS,
        "odd",
        {
            "input": 21,
            "stem": {"cout": 24, "k": 3, "stride": 2, "pool": stem_pool},
            "convs": list(zip((16, 40, 8), pools, strict=True)),
            "dense": [24],
            "epochs": 1,
            "demo_count": 1,
        },
    )
    model = read_bnn(pack_model(checkpoint_for("odd"), lively_model("odd", seed=4)))
    images = random_inputs(40, 21, seed=9)
    want = reference_scores(model, images)
    assert len({tuple(r) for r in want.tolist()}) >= 30  # the images really differ here
    assert np.array_equal(NumpyEngine(model).scores(images), want)
    monkeypatch.setattr("edge.engine.numpy_engine.HAS_BITWISE_COUNT", False)
    assert np.array_equal(NumpyEngine(model).scores(images), want)
    monkeypatch.undo()
    best = native.popcount_path()
    try:
        for path in sorted({"scalar", best}):
            native.popcount_path(path)
            assert np.array_equal(native.NativeEngine(model).scores(images), want), path
    finally:
        native.popcount_path("best")
    portable = PortableEngine(model)
    assert [portable.scores(im.tobytes()) for im in images[:2]] == want[:2].tolist()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_named_architecture_packs_and_scores_alike_in_every_engine(arch):
    """Each `--arch` a user can name, as trained and packed: the host's reference, the numpy
    and native engines and the portable one give the same integer scores."""
    from host.pack import pack_model
    from host.reference import reference_scores
    from tests.conftest import checkpoint_for, lively_model

    model = read_bnn(pack_model(checkpoint_for(arch), lively_model(arch, seed=2)))
    images = random_inputs(6, model.input_shape[0], seed=5)
    want = reference_scores(model, images)
    assert len({tuple(r) for r in want.tolist()}) >= 4  # the images really differ here
    assert np.array_equal(NumpyEngine(model).scores(images), want)
    assert np.array_equal(native.NativeEngine(model).scores(images), want)
    assert PortableEngine(model).scores(images[0].tobytes()) == want[0].tolist()

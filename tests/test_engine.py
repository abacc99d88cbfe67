import os

import numpy as np
import pytest
import torch

import edge.engine as engine_mod
from edge.engine import NumpyEngine
from edge.engine.bits import pack_signs, unpack_signs
from host.reference import reference_scores
from protocol.bnn import read_bnn
from tests.conftest import random_inputs


@pytest.mark.parametrize(
    "fixture", ["tiny_model", "bcnn_model", "lively_tiny_model", "lively_bcnn_model"]
)
def test_engine_scores_equal_the_host_reference_exactly_on_1000_random_inputs(fixture, request):
    """The randomised fixtures saturate (constant thresholds everywhere); the lively ones
    score every image differently."""
    _, data = request.getfixturevalue(fixture)
    model = read_bnn(data)
    x = random_inputs(1000, model.input_shape[0], seed=7)
    want = reference_scores(model, x)
    if fixture.startswith("lively"):
        assert len({tuple(r) for r in want.tolist()}) >= 990
    assert np.array_equal(NumpyEngine(model).scores(x), want)


@pytest.mark.parametrize("which", ["lively_tiny_model", "lively_bcnn_model"])
def test_blas_path_for_numpy_without_bitwise_count_gives_the_same_scores(
    which, request, monkeypatch
):
    """numpy 1.24 has no bitwise_count: binary layers become +-1 float32 products there."""
    import edge.engine.numpy_engine as engine_module

    model = read_bnn(request.getfixturevalue(which)[1])
    x = random_inputs(60, model.input_shape[0], seed=3)
    fast = NumpyEngine(model).scores(x)
    monkeypatch.setattr(engine_module, "HAS_BITWISE_COUNT", False)
    blas = NumpyEngine(model)
    assert blas.layers[1].weights.dtype == np.float32  # really the other path
    assert np.array_equal(blas.scores(x), fast)


def test_deployed_labels_match_the_float_model_on_random_inputs(lively_bcnn_model):
    float_model, data = lively_bcnn_model
    x = random_inputs(500, 64, seed=11)
    scores = NumpyEngine(read_bnn(data)).scores(x)
    assert len(set(scores.argmax(1).tolist())) >= 3  # not one label for every input
    with torch.no_grad():
        float_pred = float_model(((2 * torch.from_numpy(x).float() - 255) / 255).unsqueeze(1))
    agree = (float_pred.argmax(1).numpy() == scores.argmax(1)).mean()
    assert agree >= 0.99


def test_golden_self_test_passes_and_catches_an_engine_computing_a_different_layer(tiny_model):
    _, data = tiny_model
    model = read_bnn(data)
    assert NumpyEngine(model).self_test() == []
    model.layers[1].weights = bytes(b ^ 0xFF for b in model.layers[1].weights)
    assert NumpyEngine(model).self_test() != []


def test_pooling_the_accumulators_is_and_of_the_bits_and_or_in_flipped_channels(tiny_model):
    _, data = tiny_model
    prepared = NumpyEngine(read_bnn(data)).layers[0]
    flips = prepared.flips
    assert flips.any() and not flips.all()
    rng = np.random.default_rng(0)  # accumulators on both sides of every threshold
    acc = (prepared.thresholds + rng.integers(-2, 3, (3, 4, 4, 32))).astype(np.float32)
    bits = unpack_signs(prepared.threshold(acc), 32) == -1
    quads = [bits[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]
    want = np.where(flips, np.any(quads, axis=0), np.all(quads, axis=0))
    assert want.any() and not want.all()
    got = unpack_signs(prepared.threshold(prepared.pool_acc(acc)), 32) == -1
    assert np.array_equal(got, want)


def test_pack_and_unpack_signs_follow_the_documented_bit_order():
    negative = np.zeros(16, dtype=bool)
    negative[[0, 9]] = True  # element 0 -> bit 0 of byte 0, element 9 -> bit 1 of byte 1
    assert pack_signs(negative).tolist() == [0x01, 0x02]
    assert unpack_signs(pack_signs(negative), 16).tolist() == [-1 if v else 1 for v in negative]


def test_engine_package_never_imports_torch():
    folder = os.path.dirname(engine_mod.__file__)
    sources = [name for name in os.listdir(folder) if name.endswith(".py")]
    assert "numpy_engine.py" in sources and "native.py" in sources
    for name in sources:
        with open(os.path.join(folder, name)) as f:
            assert "import torch" not in f.read(), name


def test_reference_is_exact_at_the_largest_input_conv_sums(lively_default_model):
    """The reference adds the 7x7 input conv's products in float32 (host.reference): with
    every weight 127 and frames all white or all black, an inner position sums to
    +-49 * 255 * 127; a threshold at that sum and one past it turn the channel the other
    way, and the reference still gives the engine's scores to the unit."""
    model = read_bnn(lively_default_model[1])
    stem = model.layers[0]
    assert stem.k == 7 and stem.cin == 1
    top = 49 * 255 * 127
    frames = np.stack([np.full((144, 144), v, np.uint8) for v in (255, 0, 255, 0)])
    frames[2:, 60:80, 60:80] = 128  # a patch one grey level above the centre
    scores = []
    for past in (0, 1):
        t = np.array([top + past, -top + past] * (stem.cout // 2), dtype="<i4")
        model.layers[0] = stem.replaced(
            weights=np.full(stem.cout * 49, 127, np.int8).tobytes(), thresholds=t.tobytes()
        )
        want = reference_scores(model, frames)
        assert np.array_equal(NumpyEngine(model).scores(frames), want), past
        scores.append(want)
    assert not np.array_equal(scores[0], scores[1])  # the sums really sit on the thresholds

"""The PRANC hash and bases: pure Python, numpy and torch agree with each other and with the
fixed vectors published in docs/format.md; the fastfood basis is what its definition says."""

import os
import re

import numpy as np
import pytest
import torch

from edge.engine import basis as nb
from host import pranc_torch as tb
from protocol import prng

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "format.md")


def doc_vectors():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    hashes = [
        (tuple(int(v, 0) for v in m.group(1).split(",")), int(m.group(2), 16))
        for m in re.finditer(r"hash32\(([\d, x]+)\) = 0x([0-9a-f]{8})", text)
    ]
    bases = {
        m.group(1): [int(v) for v in m.group(2).split(",")]
        for m in re.finditer(
            r"(fastfood|dense)\(42, 3, \[3, -1, 4, -1, 5\], 12\) = \[([-\d, ]+)\]", text
        )
    }
    return hashes, bases


def test_docs_publish_vectors_and_every_implementation_reproduces_them():
    hashes, bases = doc_vectors()
    assert len(hashes) >= 6 and set(bases) == {"fastfood", "dense"}
    for (seed, layer, stream, index), want in hashes:
        assert prng.hash32(seed, layer, stream, index) == want
        assert int(nb.hash32(seed, layer, [stream], [index])[0, 0]) == want
        got = tb.hash32(seed, layer, torch.tensor([stream]), torch.tensor([index]))
        assert int(got[0, 0]) == want
    alpha = [3, -1, 4, -1, 5]
    assert nb.fastfood(42, 3, alpha, 12, 5).tolist() == bases["fastfood"]
    assert nb.dense(42, 3, alpha, 12).tolist() == bases["dense"]
    assert tb.Fastfood(42, 3, 12, 5)(torch.tensor(alpha)).tolist() == bases["fastfood"]
    assert tb.Dense(42, 3, 12, 5)(torch.tensor(alpha)).tolist() == bases["dense"]


def test_pure_python_and_numpy_hash_agree_on_a_million_values():
    seed, layer = 0xC0FFEE, 9
    for stream in (0, 77):
        key = prng.stream_key(seed, layer, stream)
        ref = [prng.mix32(key ^ i) for i in range(500_000)]
        got = nb.hash32(seed, layer, [stream], np.arange(500_000))[0]
        assert got.tolist() == ref


def test_numpy_and_torch_hash_agree_on_four_million_values():
    streams = np.arange(0, 2**32, 2**32 // 64, dtype=np.int64)[:64]  # large stream numbers too
    idx = np.arange(2**32 - 32768, 2**32, dtype=np.int64)  # and the top of the index range
    a = nb.hash32(0xFFFFFFFF, 200, streams, idx).astype(np.int64)
    b = tb.hash32(0xFFFFFFFF, 200, torch.from_numpy(streams), torch.from_numpy(idx)).numpy()
    assert a.shape == (64, 32768) and np.array_equal(a, b)
    a = nb.hash32(3, 1, np.arange(64), np.arange(32768)).astype(np.int64)
    b = tb.hash32(3, 1, torch.arange(64), torch.arange(32768)).numpy()
    assert np.array_equal(a, b)


def test_sign_bits_come_lsb_first_from_consecutive_words():
    bits = prng.sign_bits(5, 2, 11, 70)
    words = [prng.hash32(5, 2, 11, w) for w in range(3)]
    assert bits == [(words[i // 32] >> (i % 32)) & 1 for i in range(70)]
    assert nb.signs(5, 2, [11], 70)[0].tolist() == [1 - 2 * b for b in bits]
    assert tb.signs(5, 2, torch.tensor([11]), 70)[0].tolist() == [1 - 2 * b for b in bits]


def _hadamard(n):
    return np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("d,k", [(20, 5), (64, 16), (7, 9), (100, 1)])
def test_fastfood_is_the_documented_product_of_diagonals_permutation_and_transforms(d, k):
    n = nb.block_size(k)
    blocks = -(-d // n)
    alpha = np.random.default_rng(d).integers(-32767, 32768, k)
    a = np.zeros(n, dtype=np.int64)
    a[:k] = alpha
    h = _hadamard(n)
    d1, perm, d2, d3 = nb.fastfood_parts(11, 4, np.arange(blocks), n)
    expect = []
    for b in range(blocks):
        v = h @ (d1[b] * a)
        v = v[perm[b]]
        expect.append(d3[b] * (h @ (d2[b] * v)))
        keys = [prng.hash32(11, 4, 4 * b + 1, i) for i in range(n)]
        assert perm[b].tolist() == sorted(range(n), key=lambda i: (keys[i], i))
        assert d1[b].tolist() == [1 - 2 * s for s in prng.sign_bits(11, 4, 4 * b, n)]
    assert nb.fastfood(11, 4, alpha, d, k).tolist() == np.concatenate(expect)[:d].tolist()


def test_torch_int64_reconstruction_equals_numpy_on_a_large_layer():
    d, k = 36864, 1400
    alpha = np.random.default_rng(1).integers(-32767, 32768, k)
    ref = nb.fastfood(7, 5, alpha, d, k)
    got = tb.Fastfood(7, 5, d, k)(torch.from_numpy(alpha)).numpy()
    assert np.array_equal(ref, got)
    # a prefix is the same as zeros after it
    assert np.array_equal(
        nb.fastfood(7, 5, alpha[:300], d, k),
        nb.fastfood(7, 5, np.r_[alpha[:300], [0] * 1100], d, k),
    )
    small = alpha[:40]
    assert np.array_equal(
        nb.dense(7, 5, small, 5000), tb.Dense(7, 5, 5000, 40)(torch.from_numpy(small)).numpy()
    )


@pytest.mark.parametrize("kind", ["fastfood", "dense"])
def test_basis_gradient_is_the_transpose(kind):
    basis = tb.make_basis(kind, 3, 2, 50, 12)
    alpha = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: basis(a), (alpha,))


def test_fastfood_float_path_matches_the_exact_integers():
    alpha = torch.randint(-1000, 1000, (300,))
    basis = tb.Fastfood(1, 0, 5000, 300)
    exact = basis(alpha)
    assert torch.equal(basis(alpha.double()).long(), exact)


def test_near_zero_window_passes_gradient_only_to_weights_an_alpha_step_can_flip():
    import torch

    from host.pranc import binary_from_theta

    theta = torch.tensor([-3.0, -0.1, 0.0, 0.2, 2.5, -1.0, 1.0, 0.05], requires_grad=True)
    out = binary_from_theta(theta, 1.0, window=0.5)
    assert out.tolist() == [-1, -1, 1, 1, 1, -1, 1, 1]
    out.sum().backward()
    width = 0.5 * float(theta.detach().std())
    want = [max(0.0, 1 - abs(v) / width) / 0.5 for v in theta.tolist()]
    assert torch.allclose(theta.grad, torch.tensor(want))
    assert theta.grad[0] == 0 and theta.grad[4] == 0 and theta.grad[2] == 2.0
    plain = torch.tensor([-3.0, 0.1], requires_grad=True)
    binary_from_theta(plain).sum().backward()
    assert plain.grad.tolist() == [1.0, 1.0]  # no window: straight through everywhere

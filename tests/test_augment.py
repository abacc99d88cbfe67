"""A training batch's augmentation (host.train.augment, augmented_input) against its plain
definition, written out image by image in numpy: a shift with the edge's pixels repeated past
it, then contrast and brightness rounded to uint8, then the model's centring."""

import numpy as np
import torch

from host.train import augment, augmented_input, to_input

SHIFT = 4


def by_definition(pixels: np.ndarray, seed: int) -> np.ndarray:
    """The augmented uint8 images, from the same generator draws in the same order: each
    image's row shift, then column shift, then contrast, then brightness."""
    n, h, w = pixels.shape
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randint(0, 2 * SHIFT + 1, (n,), generator=gen).numpy() - SHIFT
    dx = torch.randint(0, 2 * SHIFT + 1, (n,), generator=gen).numpy() - SHIFT
    contrast = torch.empty(n).uniform_(0.75, 1.25, generator=gen).numpy()
    bright = torch.empty(n).uniform_(-25, 25, generator=gen).numpy()
    out = np.empty_like(pixels)
    for i in range(n):
        rows = np.clip(np.arange(h) + dy[i], 0, h - 1)
        cols = np.clip(np.arange(w) + dx[i], 0, w - 1)
        shifted = pixels[i][rows][:, cols].astype(np.float32)
        level = (shifted - np.float32(128)) * contrast[i] + np.float32(128) + bright[i]
        out[i] = np.clip(np.round(level), 0, 255).astype(np.uint8)
    return out


def test_augment_is_a_clamped_shift_then_contrast_and_brightness_in_uint8():
    rng = np.random.default_rng(0)
    for seed, (n, h, w) in enumerate([(64, 48, 48), (7, 13, 30), (1, 9, 9), (33, 144, 144)]):
        pixels = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        got = augment(torch.from_numpy(pixels), torch.Generator().manual_seed(seed))
        assert got.dtype == torch.uint8 and got.shape == (n, h, w)
        assert np.array_equal(got.numpy(), by_definition(pixels, seed)), (n, h, w)


def test_a_shift_repeats_the_edge_and_moves_the_picture():
    # one image, a ramp across its columns: whatever the draws, each output row is a window
    # of the ramp, the first or last column repeated where the window runs past the edge
    ramp = torch.arange(20, dtype=torch.uint8).repeat(10, 1)[None] * 10
    for seed in range(30):
        gen = torch.Generator().manual_seed(seed)
        out = augment(ramp, gen)[0].int()
        assert (out == out[0]).all()  # every row alike: rows only move
        steps = out[0, 1:] - out[0, :-1]
        assert (steps >= 0).all()  # still a ramp, some flat steps at one edge at most


def test_augmented_input_is_the_centred_augment_from_the_same_draws():
    rng = np.random.default_rng(1)
    for seed in range(20):
        pixels = torch.from_numpy(rng.integers(0, 256, (40, 21, 35), dtype=np.uint8))
        want = to_input(augment(pixels, torch.Generator().manual_seed(seed)))
        got = augmented_input(pixels, torch.Generator().manual_seed(seed))
        assert got.dtype == torch.float32 and got.shape == (40, 1, 21, 35)
        assert torch.equal(got, want)


def test_to_input_centres_every_grey_level_exactly():
    levels = np.arange(256)
    want = ((2 * levels - 255) / 255).astype(np.float32)  # the rational, rounded once
    got = to_input(torch.arange(256, dtype=torch.uint8).view(1, 1, 256))
    assert got.shape == (1, 1, 1, 256)
    assert np.array_equal(got[0, 0, 0].numpy(), want)

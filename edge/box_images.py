"""Synthetic box-code images: a camera looking down at a conveyor belt.

Each image is a cardboard box of varying tone and texture with a code ('F06', ...) printed in dark
ink, in one of several fonts and sizes, placed off-centre on a textured belt, then rotated, slightly
put in perspective, lit unevenly, shadowed, partly occluded, blurred and made noisy.
The amplitudes are those of a fixed camera over a conveyor whose frames a photo-eye triggers:
the box within 8% of the centre, rails keeping it within 10 degrees, occluders at the border
that never reach the code. (docs/training-notes.md: with boxes anywhere within 12% and turned
up to 20 degrees, the binary nets did not learn the codes within the demo's budget.) The `empty`
class is belt alone, sometimes with a blank box edge entering the view, so the line can tell
"no box" from "unknown box". Every image is a pure function of (seed, split, label, index).

It lives on the edge side because both sides use it: the host writes training sets with it
(host.synth) and the edge's conveyor simulator (edge.sources.conveyor) moves its boxes past a
simulated camera. numpy and Pillow only.
"""

import glob
import hashlib
import math
import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DEFAULT_CODES = ("F06", "K11", "S19", "V22")
EMPTY_LABEL = "empty"

# TrueType fonts commonly present on Debian / Raspberry Pi OS; whichever exist join Pillow's own.
_SYSTEM_FONT_GLOBS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif*.ttf",
    "/usr/share/fonts/truetype/liberation*/Liberation*.ttf",
    "/usr/share/fonts/truetype/freefont/Free*.ttf",
)


@lru_cache(maxsize=1)
def font_paths() -> tuple:
    """Pillow's bundled font (None) plus the system TrueType fonts found, in a stable order."""
    found = []
    for pattern in _SYSTEM_FONT_GLOBS:
        found.extend(
            p for p in sorted(glob.glob(pattern)) if "Oblique" not in p and "Italic" not in p
        )
    return (None, *found)


@lru_cache(maxsize=8)  # each TrueType face holds its font file in memory (~0.5 MB)
def _font(path, size: int):
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def seeded_rng(seed: int, split: str, label: str, index: int) -> random.Random:
    digest = hashlib.sha256(("%d/%s/%s/%d" % (seed, split, label, index)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _belt(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    """A dark rubber belt (float RGB: tone, streaks, seams, grain) and its mean colour."""
    tone = rng.uniform(35, 95)
    tint = np.array([rng.uniform(0.9, 1.05), rng.uniform(0.95, 1.1), rng.uniform(0.9, 1.1)])
    streaks = nrng.normal(0, rng.uniform(2, 8), size=(1, size))
    img = tone + streaks + nrng.normal(0, 4, size=(size, size))
    if rng.random() < 0.4:  # a seam across the belt
        y = rng.randrange(size)
        img[y : y + rng.randint(1, 3), :] += rng.uniform(-25, 25)
    return np.clip(img[:, :, None] * tint, 0, 255), tuple(int(v) for v in tone * tint)


def box_layer(rng: random.Random, nrng: np.random.Generator, size: int, code: str | None):
    """An RGBA box (cardboard texture, optional tape, the printed code) on a transparent layer."""
    big = size * 2  # drawn large, then rotated and shrunk, for clean edges
    bw = int(big * rng.uniform(0.55, 0.8))
    bh = int(big * rng.uniform(0.45, 0.7))
    hue = np.array([rng.uniform(175, 220), rng.uniform(135, 170), rng.uniform(85, 125)])
    card = hue * rng.uniform(0.7, 1.1) + nrng.normal(0, rng.uniform(3, 9), size=(bh, bw, 1))
    fibres = nrng.normal(0, rng.uniform(2, 6), size=(bh, 1, 1)) if rng.random() < 0.5 else 0
    card = np.clip(card + fibres, 0, 255).astype(np.uint8)
    box = Image.fromarray(card, "RGB").convert("RGBA")
    draw = ImageDraw.Draw(box)
    if rng.random() < 0.35:  # packing tape along the box
        tx = rng.randrange(bw)
        tw = rng.randint(big // 12, big // 6)
        shade = rng.randint(170, 230)
        draw.rectangle([tx, 0, tx + tw, bh], fill=(shade, shade - 10, shade - 40, 200))
    if code is not None:
        path = rng.choice(font_paths())
        font_size = int(bh * rng.uniform(0.36, 0.48))
        left, top, right, bottom = draw.textbbox((0, 0), code, font=_font(path, font_size))
        while right - left > bw * 0.92 and font_size > 8:  # wide fonts: shrink until the code fits
            font_size = int(font_size * 0.9)
            left, top, right, bottom = draw.textbbox((0, 0), code, font=_font(path, font_size))
        font = _font(path, font_size)
        x = (bw - (right - left)) / 2 - left + rng.uniform(-0.08, 0.08) * bw
        y = (bh - (bottom - top)) / 2 - top + rng.uniform(-0.12, 0.12) * bh
        ink = rng.randint(0, 60)
        draw.text((x, y), code, font=font, fill=(ink, ink, ink + rng.randint(0, 20), 255))
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    layer.paste(box, ((big - bw) // 2, (big - bh) // 2))
    return layer


def _perspective_coeffs(rng: random.Random, size: int, strength: float):
    """Coefficients for Image.transform(PERSPECTIVE) mapping the square onto a jittered quad."""
    src = [(0, 0), (size, 0), (size, size), (0, size)]
    dst = [
        (x + rng.uniform(-strength, strength), y + rng.uniform(-strength, strength)) for x, y in src
    ]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return np.linalg.solve(np.array(rows), np.array(rhs)).tolist()


def render(seed: int, split: str, label: str, index: int, size: int = 100) -> Image.Image:
    """One grey camera frame of `label` (a code, or 'empty'), fully determined by its arguments."""
    rng = seeded_rng(seed, split, label, index)
    nrng = np.random.default_rng(rng.getrandbits(64))
    belt, belt_colour = _belt(rng, nrng, size)
    img = Image.fromarray(belt.astype(np.uint8), "RGB")

    if label != EMPTY_LABEL:
        layer = box_layer(rng, nrng, size, label)
        layer = layer.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC)
        layer = layer.resize((size, size), Image.LANCZOS)
        dx = int(rng.uniform(-0.08, 0.08) * size)
        dy = int(rng.uniform(-0.08, 0.08) * size)
        img.paste(layer, (dx, dy), layer)
    elif rng.random() < 0.4:  # a blank box edge entering or leaving the view
        layer = box_layer(rng, nrng, size, None).resize((size, size), Image.LANCZOS)
        edge = int(rng.uniform(0.55, 0.8) * size) * rng.choice((-1, 1))
        img.paste(layer, (edge, int(rng.uniform(-0.1, 0.1) * size)), layer)

    img = img.transform(
        (size, size),
        Image.PERSPECTIVE,
        _perspective_coeffs(rng, size, size * 0.05),
        Image.BICUBIC,
        fillcolor=belt_colour,
    )
    draw = ImageDraw.Draw(img, "RGBA")
    if rng.random() < 0.4:  # a shadow cast across the view
        x0 = rng.uniform(-size, size)
        pts = [(x0, 0), (x0 + rng.uniform(20, 60), 0), (x0 + rng.uniform(20, 80), size), (x0, size)]
        draw.polygon(pts, fill=(0, 0, 0, rng.randint(40, 110)))
    if rng.random() < 0.25:  # something at the border hides part of the box
        side = rng.randrange(4)
        depth = int(size * rng.uniform(0.04, 0.1))
        shade = rng.randint(20, 200)
        rect = [
            (0, 0, depth, size),
            (0, 0, size, depth),
            (size - depth, 0, size, size),
            (0, size - depth, size, size),
        ][side]
        draw.rectangle(rect, fill=(shade, shade, shade, 255))

    arr = np.asarray(img.convert("L"), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0, 0.45) * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    arr = arr * light * rng.uniform(0.7, 1.25)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    blur = rng.uniform(0, 1.1)
    if blur > 0.3:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(out, dtype=np.float64) + nrng.normal(0, rng.uniform(1, 7), size=(size, size))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "L")

"""Held-out renderer 1: label stickers on boxes that fill the frame (see README.md here).

Written apart from the training generator: its own scene, its own placement, its own effects.
"""

import hashlib
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 100
SCALE = 3  # drawn at 3x, then averaged down


def _matplotlib_fonts() -> list:
    """Serif faces that ship with matplotlib (STIX, Computer Modern roman and bold): the faces
    the training generator holds out (HELD_OUT_FONTS in edge/imaging/code_styles.py names them)."""
    import matplotlib

    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    names = ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "cmr10.ttf", "cmb10.ttf")
    return [p for p in (os.path.join(folder, n) for n in names) if os.path.exists(p)]


FONT_FILES = _matplotlib_fonts()


def _rng(seed: int, label: str, index: int) -> random.Random:
    key = hashlib.blake2b(("sticker|%d|%s|%d" % (seed, label, index)).encode(), digest_size=8)
    return random.Random(int.from_bytes(key.digest(), "big"))


def _font(rng: random.Random, px: int):
    if FONT_FILES:
        return ImageFont.truetype(rng.choice(FONT_FILES), px)
    return ImageFont.load_default(size=px)


def _barcode(draw, rng, x0, y0, x1, y1):
    x = x0
    while x < x1:
        w = rng.choice((1, 1, 2, 3)) * SCALE
        if rng.random() < 0.55:
            draw.rectangle([x, y0, min(x + w - 1, x1), y1], fill=(20, 20, 20))
        x += w


def render(label: str, index: int, seed: int = 0) -> Image.Image:
    rng = _rng(seed, label, index)
    n = SIZE * SCALE
    belt = rng.randint(30, 80)
    img = Image.new("RGB", (n, n), (belt, belt, belt + 5))
    # the box: most of the frame, a little turned
    kraft = rng.choice([(190, 150, 105), (205, 170, 125), (225, 215, 200), (170, 130, 90)])
    box = Image.new("RGBA", (int(n * 1.2), int(n * 1.2)), kraft + (255,))
    bd = ImageDraw.Draw(box)
    bw, bh = box.size
    for _ in range(rng.randint(0, 2)):  # tape strips
        y = rng.randint(0, bh)
        t = rng.randint(n // 12, n // 6)
        bd.rectangle([0, y, bw, y + t], fill=(215, 190, 140, 255))
    if label != "empty":
        code_px = int(n * rng.uniform(0.13, 0.26))
        font = _font(rng, code_px)
        left, t, r, b = bd.textbbox((0, 0), label, font=font)
        tw, th = r - left, b - t
        pad = int(code_px * rng.uniform(0.3, 0.6))
        extra = int(code_px * 0.8) if rng.random() < 0.6 else 0  # room for the barcode
        lw, lh = tw + 2 * pad, th + 2 * pad + extra
        cx = bw // 2 + rng.randint(-n // 10, n // 10)
        cy = bh // 2 + rng.randint(-n // 10, n // 10)
        x0, y0 = cx - lw // 2, cy - lh // 2
        paper = rng.choice([(245, 245, 240), (250, 250, 250), (240, 235, 200), (235, 240, 245)])
        bd.rounded_rectangle([x0, y0, x0 + lw, y0 + lh], radius=rng.randint(0, pad), fill=paper)
        if rng.random() < 0.8:
            m = max(2, pad // 3)
            bd.rectangle([x0 + m, y0 + m, x0 + lw - m, y0 + lh - m], outline=(30, 30, 30), width=2)
        bd.text((x0 + pad - left, y0 + pad - t), label, font=font, fill=(15, 15, 20))
        if extra:
            _barcode(bd, rng, x0 + pad, y0 + pad + th + extra // 4, x0 + lw - pad, y0 + lh - pad)
    box = box.rotate(rng.uniform(-8, 8), resample=Image.BICUBIC, expand=False)
    img.paste(box, ((n - bw) // 2 + rng.randint(-n // 8, n // 8), (n - bh) // 2), box)
    if label == "empty" and rng.random() < 0.5:
        img = Image.new("RGB", (n, n), (belt, belt, belt + 5))
    out = img.resize((SIZE, SIZE), Image.BOX)
    length = rng.randint(1, 6)  # motion blur along the belt (horizontal)
    if length > 1:
        a = np.asarray(out, dtype=np.float32)
        k = np.ones(length, np.float32) / length
        a = np.apply_along_axis(lambda row: np.convolve(row, k, mode="same"), 1, a)
        out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 3, (SIZE, SIZE, 3))
    a = np.asarray(out, dtype=np.float32) + noise
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")

"""Held-out renderer 3: light segment-style print on dark plastic crates (see README.md here).

No font file: each character is built from the strokes of a 14-segment display (with a V of
two diagonals), each stroke a rounded bar with small gaps at the joints, the way an industrial
marker or a label printer's "LCD" face draws them. The ink is light (white, cream, yellow) on a
dark ribbed crate; the belt is light or dark; the crate is turned up to 22 degrees; the frame is
RGB, 120x120, lit from one side, defocused and noisy.
"""

import hashlib
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 120
SS = 4  # supersampling of the drawing

# nodes of a character cell, x right, y down
_N = {
    "TL": (0, 0), "TC": (0.5, 0), "TR": (1, 0),
    "ML": (0, 0.5), "MC": (0.5, 0.5), "MR": (1, 0.5),
    "BL": (0, 1), "BC": (0.5, 1), "BR": (1, 1),
}  # fmt: skip
_SEG = {
    "a": ("TL", "TR"), "b": ("TR", "MR"), "c": ("MR", "BR"), "d": ("BL", "BR"),
    "e": ("ML", "BL"), "f": ("TL", "ML"), "g1": ("ML", "MC"), "g2": ("MC", "MR"),
    "i": ("TC", "MC"), "j": ("TR", "MC"), "k": ("MC", "BL"), "l": ("MC", "BC"),
    "m": ("MC", "BR"), "v1": ("TL", "BC"), "v2": ("TR", "BC"),
}  # fmt: skip
GLYPHS = {
    "0": "a b c d e f",
    "1": "b c",
    "2": "a b g1 g2 e d",
    "6": "a f e d c g1 g2",
    "9": "a b c d f g1 g2",
    "F": "a f e g1 g2",
    "K": "f e g1 j m",
    "S": "a f g1 g2 c d",
    "V": "v1 v2",
}


def _rng(seed: int, label: str, index: int) -> random.Random:
    key = hashlib.blake2b(("crate|%d|%s|%d" % (seed, label, index)).encode(), digest_size=8)
    return random.Random(int.from_bytes(key.digest(), "big"))


def _code_layer(rng, code: str, h: float):
    """An L-mode mask of `code` in segment strokes, `h` pixels high, and its width."""
    cw, gap = h * rng.uniform(0.5, 0.62), h * rng.uniform(0.18, 0.3)
    thick = h * rng.uniform(0.1, 0.15)
    slant = rng.choice((0.0, 0.0, rng.uniform(0.08, 0.2)))
    pad = int(thick * 2 + 4)
    width = int(len(code) * cw + (len(code) - 1) * gap + 2 * pad + slant * h)
    mask = Image.new("L", (width, int(h + 2 * pad)), 0)
    draw = ImageDraw.Draw(mask)
    trim = thick * 0.55  # the gap at each joint
    for n, ch in enumerate(code):
        if ch not in GLYPHS:
            raise ValueError("crate renderer has no glyph for %r" % ch)
        x0 = pad + n * (cw + gap)
        for seg in GLYPHS[ch].split():
            (u1, v1), (u2, v2) = (_N[p] for p in _SEG[seg])
            p1 = (x0 + u1 * cw + slant * h * (1 - v1), pad + v1 * h)
            p2 = (x0 + u2 * cw + slant * h * (1 - v2), pad + v2 * h)
            length = math.dist(p1, p2) or 1.0
            t = min(0.45, trim / length)
            a = (p1[0] + (p2[0] - p1[0]) * t, p1[1] + (p2[1] - p1[1]) * t)
            b = (p2[0] - (p2[0] - p1[0]) * t, p2[1] - (p2[1] - p1[1]) * t)
            draw.line([a, b], fill=255, width=max(1, int(thick)))
            r = thick / 2
            for x, y in (a, b):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return mask


def render(label: str, index: int, seed: int = 0) -> Image.Image:
    rng = _rng(seed, label, index)
    nrng = np.random.default_rng(rng.getrandbits(32))
    n = SIZE * SS
    belt = (
        tuple(int(rng.uniform(150, 220) * k) for k in (1, rng.uniform(0.95, 1.1), 1))
        if rng.random() < 0.5
        else (rng.randint(20, 60),) * 3
    )
    img = Image.new("RGB", (n, n), belt)
    if label != "empty" or rng.random() < 0.6:
        cw, ch = int(n * rng.uniform(0.6, 1.0)), int(n * rng.uniform(0.55, 0.9))
        base = rng.choice([(30, 32, 36), (25, 45, 90), (30, 70, 40), (70, 30, 30), (50, 50, 55)])
        crate = Image.new("RGBA", (cw, ch), base + (255,))
        cd = ImageDraw.Draw(crate)
        step = rng.randint(n // 30, n // 14)  # moulded ribs
        for y in range(0, ch, step):
            shade = tuple(min(255, c + 18) for c in base) + (255,)
            cd.rectangle([0, y, cw, y + step // 4], fill=shade)
        if label != "empty":
            h = n * rng.uniform(0.12, 0.3)
            mask = _code_layer(rng, label, h)
            if mask.width > cw * 0.9:
                mask = mask.resize((int(cw * 0.9), int(mask.height * cw * 0.9 / mask.width)))
            ink = rng.choice([(240, 240, 235), (235, 225, 180), (230, 210, 60), (210, 210, 210)])
            panel = rng.random() < 0.4  # a darker smooth panel behind the print
            x = (cw - mask.width) // 2 + rng.randint(-cw // 12, cw // 12)
            y = (ch - mask.height) // 2 + rng.randint(-ch // 12, ch // 12)
            if panel:
                cd.rectangle([x, y, x + mask.width, y + mask.height], fill=(15, 15, 18, 255))
            crate.paste(Image.new("RGBA", mask.size, ink + (255,)), (x, y), mask)
        crate = crate.rotate(rng.uniform(-22, 22), resample=Image.BICUBIC, expand=True)
        cx = (n - crate.width) // 2 + rng.randint(-n // 12, n // 12)
        cy = (n - crate.height) // 2 + rng.randint(-n // 12, n // 12)
        if label == "empty":
            cx += rng.choice((-1, 1)) * n // 2
        img.paste(crate, (cx, cy), crate)
    a = np.asarray(img.resize((SIZE, SIZE), Image.BOX), np.float32)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    angle = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.75, 1.15) * (
        1 + 0.35 * ((xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle))
    )
    a = a * light[:, :, None]
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9))
    )
    a = np.asarray(out, np.float32) + nrng.normal(0, rng.uniform(2, 6), (SIZE, SIZE, 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")

"""Held-out renderer 2: codes hand-written with a marker (see README.md here).

No font file: every character is drawn from its own stroke skeleton below, jittered and
slanted, as anti-aliased thick lines (a distance field in numpy). The frame is 4:3, seen
through a tilted camera (a homography sampled in numpy), then defocused, JPEG-compressed and
put in the limited-range luma of a camera's YUV stream.
"""

import hashlib
import io
import math
import random

import numpy as np
from PIL import Image, ImageFilter

W, H = 128, 96
SS = 2  # supersampling of the stroke raster


def _arc(cx, cy, rx, ry, a0, a1, n=20):
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(a0, a1, n)
    ]


# skeletons in a unit cell, x right, y down; each glyph is a list of polylines
GLYPHS = {
    "0": [_arc(0.5, 0.5, 0.4, 0.5, 0, 360, 32)],
    "1": [[(0.25, 0.22), (0.55, 0.0), (0.55, 1.0)]],
    "2": [_arc(0.5, 0.28, 0.38, 0.28, 200, 380) + [(0.1, 1.0), (0.9, 1.0)]],
    "6": [_arc(0.5, 0.5, 0.4, 0.5, 300, 180) + [(0.1, 0.7)], _arc(0.5, 0.7, 0.4, 0.3, 0, 360, 28)],
    "9": [
        [(1 - x, 1 - y) for x, y in _arc(0.5, 0.5, 0.4, 0.5, 300, 180) + [(0.1, 0.7)]],
        [(1 - x, 1 - y) for x, y in _arc(0.5, 0.7, 0.4, 0.3, 0, 360, 28)],
    ],
    "F": [[(0.85, 0.0), (0.15, 0.0), (0.15, 1.0)], [(0.15, 0.48), (0.7, 0.48)]],
    "K": [[(0.15, 0.0), (0.15, 1.0)], [(0.85, 0.0), (0.15, 0.6)], [(0.38, 0.42), (0.88, 1.0)]],
    "S": [_arc(0.5, 0.26, 0.38, 0.24, 340, 90) + _arc(0.5, 0.74, 0.38, 0.24, 270, 520)],
    "V": [[(0.08, 0.0), (0.5, 1.0), (0.92, 0.0)]],
}


def _rng(seed: int, label: str, index: int) -> random.Random:
    key = hashlib.blake2b(("marker|%d|%s|%d" % (seed, label, index)).encode(), digest_size=8)
    return random.Random(int.from_bytes(key.digest(), "big"))


def _strokes(rng, code, x0, y0, h):
    """Segments (x1, y1, x2, y2) in pixels for `code` of height h from (x0, y0)."""
    slant = rng.uniform(-0.25, 0.25)
    width = h * rng.uniform(0.5, 0.7)
    gap = h * rng.uniform(0.12, 0.3)
    segs, x = [], x0
    for ch in code:
        if ch not in GLYPHS:
            raise ValueError("marker renderer has no glyph for %r" % ch)
        s = rng.uniform(0.9, 1.1)
        dy = rng.uniform(-0.06, 0.06) * h
        for line in GLYPHS[ch]:
            pts = []
            for u, v in line:
                u += rng.gauss(0, 0.025)
                v += rng.gauss(0, 0.025)
                py = y0 + dy + v * h * s
                px = x + u * width * s + slant * (y0 + h - py)
                pts.append((px, py))
            segs.extend((a[0], a[1], b[0], b[1]) for a, b in zip(pts, pts[1:], strict=False))
        x += width * s + gap
    return np.array(segs), x - gap - x0


def _ink(segs, thick, w, h):
    """Coverage in [0, 1] of thick lines along segs, on a w x h pixel grid."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    d = np.full((h, w), np.inf, np.float32)
    for x1, y1, x2, y2 in segs:
        vx, vy = x2 - x1, y2 - y1
        ll = vx * vx + vy * vy or 1e-9
        t = np.clip(((xs - x1) * vx + (ys - y1) * vy) / ll, 0, 1)
        d = np.minimum(d, np.hypot(xs - x1 - t * vx, ys - y1 - t * vy))
    return np.clip(thick / 2 - d + 0.5, 0, 1)


def _homography(src, dst):
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1).reshape(3, 3)


def _tilt(img, rng):
    """Resample the frame as a camera a little off-axis sees it (bilinear, edge clamped)."""
    h, w = img.shape
    j = 0.07
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(x + rng.uniform(-j, j) * w, y + rng.uniform(-j, j) * h) for x, y in corners]
    m = _homography(corners, moved)  # output pixel -> source pixel
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    q = m @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    sx = np.clip(q[0] / q[2], 0, w - 1.001)
    sy = np.clip(q[1] / q[2], 0, h - 1.001)
    x0, y0 = sx.astype(int), sy.astype(int)
    fx, fy = sx - x0, sy - y0
    out = (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )
    return out.reshape(h, w)


def render(label: str, index: int, seed: int = 0) -> Image.Image:
    rng = _rng(seed, label, index)
    nrng = np.random.default_rng(rng.getrandbits(32))
    w, h = W * SS, H * SS
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    belt = rng.uniform(25, 70)
    img = belt + nrng.normal(0, 3, (h, w))
    # a plain box, turned, covering the centre
    tone = rng.choice([rng.uniform(140, 190), rng.uniform(200, 240), rng.uniform(90, 130)])
    ang = math.radians(rng.uniform(-12, 12))
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    u = (xs - cx) * math.cos(ang) + (ys - cy) * math.sin(ang)
    v = -(xs - cx) * math.sin(ang) + (ys - cy) * math.cos(ang)
    half_w, half_h = rng.uniform(0.35, 0.6) * w, rng.uniform(0.4, 0.7) * h
    on_box = (np.abs(u) < half_w) & (np.abs(v) < half_h)
    if label == "empty" and rng.random() < 0.4:
        on_box[:] = False
    img = np.where(on_box, tone + nrng.normal(0, 4, (h, w)), img)
    if label != "empty":
        code_h = H * SS * rng.uniform(0.14, 0.32)
        segs, code_w = _strokes(rng, label, 0, 0, code_h)
        # centred within the square crop the model sees
        ox = w / 2 - code_w / 2 + rng.uniform(-0.12, 0.12) * h
        oy = h / 2 - code_h / 2 + rng.uniform(-0.12, 0.12) * h
        segs = segs + np.array([ox, oy, ox, oy])
        cover = _ink(segs, code_h * rng.uniform(0.08, 0.15), w, h)
        ink = rng.uniform(10, 60)
        img = img * (1 - cover) + ink * cover
    light = 0.65 + 0.6 * np.exp(
        -((xs - rng.uniform(0, w)) ** 2 + (ys - rng.uniform(0, h)) ** 2) / (2 * (0.6 * w) ** 2)
    )
    img = _tilt(img * light, rng)
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").resize((W, H), Image.BOX)
    small = small.filter(ImageFilter.BoxBlur(rng.uniform(0, 1.0)))
    a = np.asarray(small, np.float32) + nrng.normal(0, rng.uniform(1, 5), (H, W))
    small = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=rng.randint(25, 75))
    a = np.asarray(Image.open(buf).convert("L"), np.float32)
    return Image.fromarray(np.round(16 + a * 219 / 255).astype(np.uint8), "L")

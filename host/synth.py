"""Synthetic data sets of box-code images: DIR/{train,test}/<label>/*.png and DIR/labels.json.

Each image is rendered by edge.imaging.box_images (what it looks like and why is described there):
with `styles`, its code drawn in one of the named styles of edge.imaging.code_styles on a box of any
size and place, every code at least 3 noise sigmas out of the frame, a third in light print on dark
boxes, on light belts, turned past 15 degrees, further out of focus or on ribbed faces, codes
8-35% of the frame high, as many per octave of size, in every font the machine has but the
held-out ones, 14-segment faces among them, and boxes without a code that carry other print
(binsort-synth-13, what `binsort data synth`, `train --data synth` and the demo draw;
binsort-synth-12 drew the same code frames, and no print where a code would be on an empty box;
binsort-synth-11 drew the same scenes in colour up to the camera, each code frame twice;
binsort-synth-10 drew barcodes under fewer codes, all of them fine;
binsort-synth-9 drew 15% of the frames light on dark, not 35%;
binsort-synth-8 drew them without the 14-segment faces and with TeX Gyre Adventor;
binsort-synth-7 drew the same scenes with codes 10-35% high, uniformly; binsort-synth-6 drew
them with bicubic, not bilinear, turns on its large canvas, in 1.4 times the time;
binsort-synth-5 drew no ribbed faces; binsort-synth-4 also drew codes
in reverse-video faces, which printed as blocks; binsort-synth-3 drew none of those scene
changes, binsort-synth-2 drew faint codes too);
without, the first generator's carton-printed codes near the centre (binsort-synth-1, kept for the
fast tests and the conveyor simulator: a model trained on it reads no other boxes). Every image is a
pure function of (seed, split, label, index, styles) and the fonts the machine has, so a data set is
reproducible on any machine with the same fonts.
"""

import json
import os
from concurrent.futures import ProcessPoolExecutor

from edge.imaging.box_images import (
    CLASSIC_GENERATOR,
    CODE_HEIGHT,
    DEFAULT_CODES,
    EMPTY_LABEL,
    STYLED_GENERATOR,
    render,
)
from edge.imaging.code_styles import STYLES
from host.allocator import keep_freed_memory
from protocol.errors import BinsortError

TEST_FRACTION = 0.2


def _write_one(job):
    seed, split, label, index, size, styles, code_height, path = job
    render(seed, split, label, index, size, styles, code_height).save(path)


def parse_code_height(text: "str | None") -> tuple:
    """'10-35' or '0.10-0.35' (shares of the frame's height, as percentages or fractions) ->
    (0.10, 0.35); None -> CODE_HEIGHT."""
    if text is None:
        return CODE_HEIGHT
    try:
        low, high = (float(v) for v in text.replace("%", "").split("-"))
    except ValueError:
        raise BinsortError(
            "--code-height %r: give LOW-HIGH shares of the frame's height, e.g. 10-35" % text
        ) from None
    if high > 1:  # percentages
        low, high = low / 100, high / 100
    if not 0.03 <= low < high <= 0.6:
        raise BinsortError(
            "--code-height %s: the band must lie within 3-60%% of the frame, low below high" % text
        )
    return (low, high)


def parse_styles(text: "str | None") -> "tuple | None":
    """'label,stamp' -> those styles; '-stencil' -> all but stencil; 'all' -> all; 'classic' or
    None -> None (the first generator's frames, edge.imaging.box_images.render_classic)."""
    if text is None or text.strip() == "classic":
        return None
    if text.strip() == "all":
        return tuple(STYLES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BinsortError(
            "--styles %r names no style (choose from %s, or all)" % (text, ", ".join(STYLES))
        )
    unknown = [n.lstrip("-") for n in names if n.lstrip("-") not in STYLES]
    if unknown:
        raise BinsortError(
            "unknown style %s (choose from %s)" % (", ".join(unknown), ", ".join(STYLES))
        )
    drop = {n[1:] for n in names if n.startswith("-")}
    keep = [n for n in names if not n.startswith("-")] or list(STYLES)
    chosen = tuple(n for n in STYLES if n in keep and n not in drop)
    if not chosen:
        raise BinsortError("--styles %s leaves no style to draw" % text)
    return chosen


def synthesise(
    out_dir: str,
    count: int = 3000,
    size: int = 100,
    codes=DEFAULT_CODES,
    seed: int = 0,
    workers: int | None = None,
    progress=None,
    styles: "tuple | None" = None,
    code_height: tuple = CODE_HEIGHT,
) -> dict:
    """Write out_dir/{train,test}/<label>/*.png and out_dir/labels.json; `count` images per label.

    `code_height`: the band (shares of the frame's height) the styled codes' heights are drawn
    from, per octave (box_images.render). Returns the contents of labels.json. `progress(n)` is
    called as images are written.
    """
    keep_freed_memory()  # for the workers this process forks
    labels = [*codes, EMPTY_LABEL]
    styles = tuple(styles) if styles else None
    n_test = max(1, int(round(count * TEST_FRACTION)))
    jobs = []
    for split, n in (("train", count - n_test), ("test", n_test)):
        for label in labels:
            folder = os.path.join(out_dir, split, label)
            os.makedirs(folder, exist_ok=True)
            jobs.extend(
                (
                    seed,
                    split,
                    label,
                    i,
                    size,
                    styles,
                    code_height,
                    os.path.join(folder, "%05d.png" % i),
                )
                for i in range(n)
            )
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_write_one, jobs, chunksize=64):
                if progress:
                    progress(1)
    else:
        for job in jobs:
            _write_one(job)
            if progress:
                progress(1)
    info = {
        "labels": labels,
        "size": size,
        "seed": seed,
        "count_per_label": count,
        "generator": STYLED_GENERATOR if styles else CLASSIC_GENERATOR,
        "styles": list(styles) if styles else None,
    }
    if styles:
        info["code_height"] = list(code_height)
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info

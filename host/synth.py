"""Synthetic data sets of box-code images: DIR/{train,test}/<label>/*.png and DIR/labels.json.

Each image is rendered by edge.box_images (what it looks like and why is described there; the
edge's conveyor simulator uses the same renderer). Every image is a pure function of
(seed, split, label, index), so a data set is reproducible on any machine.
"""

import json
import os
from concurrent.futures import ProcessPoolExecutor

from edge.box_images import DEFAULT_CODES, EMPTY_LABEL, render

TEST_FRACTION = 0.2


def _write_one(job):
    seed, split, label, index, size, path = job
    render(seed, split, label, index, size).save(path)


def synthesise(
    out_dir: str,
    count: int = 3000,
    size: int = 100,
    codes=DEFAULT_CODES,
    seed: int = 0,
    workers: int | None = None,
    progress=None,
) -> dict:
    """Write out_dir/{train,test}/<label>/*.png and out_dir/labels.json; `count` images per label.

    Returns the contents of labels.json. `progress(n)` is called as images are written.
    """
    labels = [*codes, EMPTY_LABEL]
    n_test = max(1, int(round(count * TEST_FRACTION)))
    jobs = []
    for split, n in (("train", count - n_test), ("test", n_test)):
        for label in labels:
            folder = os.path.join(out_dir, split, label)
            os.makedirs(folder, exist_ok=True)
            jobs.extend(
                (seed, split, label, i, size, os.path.join(folder, "%05d.png" % i))
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
        "generator": "binsort-synth-1",
    }
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info

import json
import os

import numpy as np
import pytest

from edge.imaging.box_images import render
from edge.imaging.imagefolder import dataset_splits, labelled_images
from host.synth import synthesise
from protocol.errors import BinsortError


def test_rendering_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = np.asarray(render(5, "train", "K11", 3))
    assert np.array_equal(a, np.asarray(render(5, "train", "K11", 3)))
    assert not np.array_equal(a, np.asarray(render(6, "train", "K11", 3)))
    assert a.shape == (100, 100)


def test_synthesised_set_has_train_test_and_labels_with_an_empty_class(tmp_path):
    info = synthesise(str(tmp_path), count=5, size=48, codes=("A01", "B02"), seed=1, workers=1)
    assert info["labels"] == ["A01", "B02", "empty"]
    with open(tmp_path / "labels.json") as f:
        assert json.load(f)["labels"] == info["labels"]
    for split, n in (("train", 4), ("test", 1)):
        for label in info["labels"]:
            assert len(os.listdir(tmp_path / split / label)) == n
    labels, train, test = dataset_splits(str(tmp_path))
    assert labels == info["labels"] and len(train) == 12 and len(test) == 3


def test_plain_label_folders_are_split_deterministically(tmp_path):
    for label in ("cat", "dog"):
        os.makedirs(tmp_path / label)
        for i in range(30):
            render(0, "x", label, i, 32).save(tmp_path / label / ("%d.png" % i))
    first = dataset_splits(str(tmp_path))
    assert first == dataset_splits(str(tmp_path))
    labels, train, test = first
    assert labels == ["cat", "dog"] and len(train) + len(test) == 60 and 0 < len(test) < 30


def test_folder_without_class_folders_is_a_clean_error(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(BinsortError, match="no class folders"):
        labelled_images(str(tmp_path))


@pytest.mark.parametrize(
    "text,message",
    [
        (b'{"labels": [1, "cat"]}', "labels must be a list of names"),
        (b'{"labels": NaN}', "labels must be a list of names"),
        (b"[" * 5000 + b"]" * 5000, "RecursionError"),  # nested past the parser's limit
        (b"\x89PNG\r\n", "cannot read"),
        (b'{"labels": ["cat", "cow"]}', "lists labels"),
    ],
)
def test_a_damaged_labels_json_is_a_clean_error(tmp_path, text, message):
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            (tmp_path / split / label / "0.png").write_bytes(b"")
    (tmp_path / "labels.json").write_bytes(text)
    with pytest.raises(BinsortError, match=message):
        dataset_splits(str(tmp_path))


def test_a_code_height_band_draws_the_set_and_is_recorded_and_a_96_net_gets_its_own(tmp_path):
    """`data synth --code-height` draws every styled frame from the band and says so in
    labels.json; `train --data synth` draws first96s's set with its band (10-35%), the
    default's with the generator's (8-35%); a band out of range is one line and exit 2."""
    import subprocess
    import sys
    import types

    from edge.imaging.box_images import CODE_HEIGHT
    from edge.imaging.code_styles import STYLES
    from host.cli import _train_sources

    out = tmp_path / "band"
    cli = [sys.executable, "-m", "host.cli", "data", "synth", "--count", "2", "--size", "64"]
    done = subprocess.run([*cli, "--out", str(out), "--code-height", "12-20", "--quiet"])
    assert done.returncode == 0
    assert json.loads((out / "labels.json").read_text())["code_height"] == [0.12, 0.2]
    drawn = np.asarray(render(0, "train", "S19", 0, 64, tuple(STYLES), (0.12, 0.2)))
    assert np.array_equal(np.asarray(render_file(out / "train" / "S19" / "00000.png")), drawn)
    assert not np.array_equal(np.asarray(render(0, "train", "S19", 0, 64, tuple(STYLES))), drawn)
    for bad in ("20-12", "1-20", "ten-35"):
        err = subprocess.run(
            [*cli, "--out", str(tmp_path / bad), "--code-height", bad],
            capture_output=True,
            text=True,
        )
        assert err.returncode == 2 and len(err.stderr.strip().splitlines()) == 1, err.stderr
        assert "--code-height" in err.stderr and not (tmp_path / bad).exists()

    for arch, band in (("first96s", [0.1, 0.35]), ("tiny", list(CODE_HEIGHT))):
        args = types.SimpleNamespace(out=str(tmp_path / arch), synth_count=2, seed=0, styles="all")
        (folder,) = _train_sources(args, ["synth"], arch)
        info = json.loads((tmp_path / arch / "data" / "labels.json").read_text())
        assert folder == str(tmp_path / arch / "data") and info["code_height"] == band


def render_file(path):
    from PIL import Image

    with Image.open(path) as img:
        return img.copy()

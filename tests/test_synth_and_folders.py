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

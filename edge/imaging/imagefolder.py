"""Finding images on disk: loose files, folders of images, and folders of label sub-folders.

A labelled folder is either a synthesised set (`train/`, `test/`, `labels.json`) or any folder
with one sub-folder of images per label, which is split deterministically into train and test by
a hash of each file's path, so a user's own photos work the same way.
"""

import hashlib
import json
import os

from protocol.errors import BinsortError, bounded

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
TEST_FRACTION = 0.2


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def image_files(paths) -> list:
    """Every image named, or found (recursively, sorted) under a named folder."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if _is_image(f))
        elif os.path.exists(path):
            found.append(path)
        else:
            raise BinsortError("no such file or folder: %s" % path)
    return found


def labelled_images(folder: str) -> "tuple[list, list]":
    """(labels, [(path, label index)]) for a folder with one sub-folder of images per label."""
    if not os.path.isdir(folder):
        raise BinsortError("no such data folder: %s" % folder)
    labels, items = [], []
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if not os.path.isdir(sub) or name in ("train", "test") or name.startswith("."):
            continue  # hidden folders (a pull's sidecars and frames) are not classes
        files = image_files([sub])
        if files:
            items.extend((f, len(labels)) for f in files)
            labels.append(name)
    if not labels:
        raise BinsortError(
            "%s has no class folders with images in them (expected one "
            "sub-folder of images per label)" % folder
        )
    return labels, items


def _in_test(path: str, root: str) -> bool:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return hashlib.sha1(rel.encode()).digest()[0] < int(256 * TEST_FRACTION)


def dataset_splits(folder: str) -> "tuple[list, list, list]":
    """(labels, train items, test items) for a data folder, in a stable label order."""
    train_dir, test_dir = os.path.join(folder, "train"), os.path.join(folder, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        labels, train = labelled_images(train_dir)
        test_labels, test = labelled_images(test_dir)
        declared = os.path.join(folder, "labels.json")
        if os.path.exists(declared):
            try:
                with open(declared, encoding="utf-8") as f:
                    order = json.load(f)["labels"]
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
                raise BinsortError("cannot read %s: %s" % (declared, bounded(e))) from None
            if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
                raise BinsortError("%s: labels must be a list of names" % declared)
            if sorted(order) != sorted(labels):
                raise BinsortError(
                    "%s lists labels %s but train/ has %s" % (declared, order, labels)
                )
            labels = list(order)
        train = relabel(train, sorted(labels), labels)
        test = relabel(test, test_labels, labels)
        return labels, train, test
    labels, items = labelled_images(folder)
    train = [it for it in items if not _in_test(it[0], folder)]
    test = [it for it in items if _in_test(it[0], folder)]
    return labels, train, test


def relabel(items: list, have: list, want: list) -> list:
    """Map label indices from the order `have` to the order `want`; unknown labels are an error."""
    missing = [lb for lb in have if lb not in want]
    if missing:
        raise BinsortError("labels %s are not among the model's labels %s" % (missing, want))
    index = [want.index(lb) for lb in have]
    return [(path, index[i]) for path, i in items]

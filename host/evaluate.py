"""Accuracy and confusion of a deployed model, computed through the edge engine itself."""

import numpy as np

from edge.engine import load_engine
from edge.imaging.imagefolder import labelled_images, relabel
from edge.imaging.preprocess import load_inputs
from edge.imaging.views import DEFAULT_VIEWS, view_probabilities


def load_labelled(engine, data_dir: str) -> "tuple[np.ndarray, np.ndarray]":
    """A folder of label sub-folders -> (model inputs (N, H, W) uint8, label indices in the
    model's label order)."""
    folder_labels, items = labelled_images(data_dir)
    items = relabel(items, folder_labels, engine.model.labels)
    images = load_inputs([path for path, _ in items], *engine.model.input_shape)
    return images, np.array([label for _, label in items], dtype=np.int64)


def summarise(labels: list, truth: np.ndarray, scores: np.ndarray) -> dict:
    """n, accuracy and confusion (rows: true label, columns: predicted) from scores or
    probabilities, (N, classes): the decision is each row's largest."""
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    return {
        "n": int(len(truth)),
        "accuracy": float((truth == predicted).mean()),
        "labels": labels,
        "confusion": confusion.tolist(),
    }


def evaluate(model_path: str, data_dir: str, prefix_bytes=None, views=DEFAULT_VIEWS) -> dict:
    """Run every image of a folder of label sub-folders through the edge engine, each read as
    `views` shifted and turned views (edge.imaging.views; 1: the image once, as one camera
    frame). The accuracy and confusion are the views' decisions; `one_view_accuracy` is the
    image's own. For a `.pranc` stream, `prefix_bytes` evaluates its longest prefix within that
    many bytes."""
    engine = load_engine(model_path, prefix_bytes)
    images, truth = load_labelled(engine, data_dir)
    probs, given = view_probabilities(engine, images, views)
    result = summarise(engine.model.labels, truth, probs)
    one_view = float((given.argmax(axis=1) == truth).mean()) if len(truth) else 0.0
    out = {"model": model_path, "data": data_dir, "engine": engine.name, **result}
    out.update(views=views, one_view_accuracy=one_view)
    stream = engine.source
    if stream is not None:
        out["stream"] = stream_summary(stream)
    return out


def stream_summary(decoder) -> dict:
    """What part of a .pranc stream a model was built from."""
    last = decoder.last_chunk
    return {
        "bytes": decoder.bytes_used,
        "chunks": decoder.chunks,
        "of_chunks": decoder.head["chunks"],
        "host_accuracy": None if last is None else last.accuracy,
    }


def format_report(result: dict) -> str:
    """Accuracy line and a confusion matrix (rows: true label, columns: predicted)."""
    labels = result["labels"]
    width = max(8, *(len(lb) + 1 for lb in labels))
    views = result.get("views", 1)
    how = result["engine"] + " engine"
    if views > 1:
        how += ", %d views of each; one view: %.4f" % (views, result["one_view_accuracy"])
    lines = [
        "accuracy %.4f on %d images (%s)" % (result["accuracy"], result["n"], how),
        "true \\ predicted".ljust(width + 2) + "".join(lb.rjust(width) for lb in labels),
    ]
    for lb, row in zip(labels, result["confusion"], strict=True):
        lines.append(lb.ljust(width + 2) + "".join(str(v).rjust(width) for v in row))
    if "stream" in result:
        s = result["stream"]
        lines.insert(
            1,
            "model: the first %d of %d chunks of the stream (%d bytes)"
            % (s["chunks"], s["of_chunks"], s["bytes"]),
        )
    return "\n".join(lines)

"""What every engine shares: batching, the decision from integer scores, the self-test on the
model's golden inputs and how it names itself. A subclass computes the integer scores of one
batch (`_run`); everything else is here, once."""

import numpy as np

from protocol.bnn import BnnModel


def softmax(real: np.ndarray) -> np.ndarray:
    """Class probabilities of real-valued scores, over the last axis (one frame's or a batch's)."""
    e = np.exp(real - real.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Engine:
    """Runs a parsed BnnModel. `scores` gives the exact integer class scores.

    `source` is the `.pranc` stream decoder the model was rebuilt from (edge.engine.stream), or
    None for a `.bnn`; `stage` is (stage, stages) when the model is a stage of a `.bsc`
    cascade, else None. `load_engine` sets both."""

    name = "engine"

    def __init__(self, model: BnnModel, chunk: int = 64):
        self.model = model
        self.out_scale = model.layers[-1].scale
        self.chunk = chunk
        self.source = None
        self.stage = None

    def describe(self) -> str:
        """The engine as `--verbose` and the daemon status name it."""
        return self.name

    def scores(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) model inputs -> int64 (N, classes) scores, `chunk` images at a time."""
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 2:
            images = images[None]
        out = [self._run(images[i : i + self.chunk]) for i in range(0, len(images), self.chunk)]
        return np.concatenate(out) if out else np.zeros((0, len(self.model.labels)), np.int64)

    def _run(self, images: np.ndarray) -> np.ndarray:
        """One batch of uint8 (n, H, W) inputs -> int64 (n, classes) scores."""
        raise NotImplementedError

    def classify(self, images: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """(label indices, confidences, real-valued scores) for a batch of model inputs."""
        return self.decide(self.scores(images))

    def decide(self, ints: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """(label indices, confidences, real-valued scores) of integer scores."""
        probs = self.probabilities(ints)
        best = ints.argmax(axis=1)
        return best, probs[np.arange(len(best)), best], ints.astype(np.float64) * self.out_scale

    def probabilities(self, ints: np.ndarray) -> np.ndarray:
        """Class probabilities, float64 (N, classes): the softmax of the real-valued scores."""
        return softmax(ints.astype(np.float64) * self.out_scale)

    def self_test(self) -> "list[int]":
        """Indices of golden inputs whose scores differ from those stored with the model."""
        h, w = self.model.input_shape
        bad = []
        for i, (image, expected) in enumerate(self.model.golden):
            got = self.scores(np.frombuffer(image, dtype=np.uint8).reshape(1, h, w))[0]
            if list(got) != list(expected):
                bad.append(i)
        return bad

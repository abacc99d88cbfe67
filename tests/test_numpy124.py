"""The edge engine on numpy 1.24 (as on Raspberry Pi OS bookworm), in a venv of its own."""

import os
import subprocess
import venv

import numpy as np
import pytest

from edge.engine import NumpyEngine
from protocol.bnn import read_bnn
from tests.conftest import random_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from edge.engine import NumpyEngine
from protocol.bnn import read_bnn
assert np.__version__.startswith("1.24") and not hasattr(np, "bitwise_count"), np.__version__
model = read_bnn(open(sys.argv[2], "rb").read())
data = np.load(sys.argv[3])
engine = NumpyEngine(model)
assert engine.self_test() == []
print("equal" if np.array_equal(engine.scores(data["x"]), data["scores"]) else "different")
"""


@pytest.mark.slow
def test_engine_on_numpy_1_24_gives_the_same_scores_as_on_current_numpy(
    lively_bcnn_model, tmp_path
):
    _, blob = lively_bcnn_model
    (tmp_path / "m.bnn").write_bytes(blob)
    x = random_inputs(300, 64, seed=9)
    scores = NumpyEngine(read_bnn(blob)).scores(x)
    assert len({tuple(r) for r in scores.tolist()}) == 300
    np.savez(tmp_path / "expected.npz", x=x, scores=scores)
    env_dir = tmp_path / "np124"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "numpy==1.24.4"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (tmp_path / "check.py").write_text(CHECK)
    out = subprocess.run(
        [
            python,
            str(tmp_path / "check.py"),
            ROOT,
            str(tmp_path / "m.bnn"),
            str(tmp_path / "expected.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "equal"

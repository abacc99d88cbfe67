import math

from hypothesis import given
from hypothesis import strategies as st

from protocol.fold import INT32_MAX, INT32_MIN, fold_threshold

finite = st.floats(-50, 50, allow_nan=False)


def _bn(acc, a, b, gamma, beta, mean, var, eps):
    """BatchNorm output, and the size of float rounding in computing it."""
    g = gamma / math.sqrt(var + eps)
    y = a * acc + b
    value = g * (y - mean) + beta
    rounding = 1e-9 * (abs(g) * (abs(a * acc) + abs(b) + abs(mean)) + abs(beta))
    return value, rounding


@given(
    a=st.floats(1e-4, 10),
    b=finite,
    gamma=finite,
    beta=finite,
    mean=finite,
    var=st.floats(1e-3, 100),
)
def test_folded_threshold_equals_batchnorm_then_sign_away_from_rounding_ties(
    a, b, gamma, beta, mean, var
):
    t, flip = fold_threshold(a, b, gamma, beta, mean, var, 1e-5)
    for acc in range(-300, 301, 3):
        value, rounding = _bn(acc, a, b, gamma, beta, mean, var, 1e-5)
        if abs(value) <= rounding:
            continue  # within float rounding of the threshold: either side is a faithful fold
        folded = -1 if (acc < t) != bool(flip) else 1
        assert folded == (1 if value >= 0 else -1), (acc, t, flip)


def test_zero_gamma_gives_constant_outputs_from_the_sign_of_beta():
    assert fold_threshold(1.0, 0.0, 0.0, 0.5, 3.0, 1.0, 1e-5) == (INT32_MIN, 0)
    assert fold_threshold(1.0, 0.0, 0.0, -0.5, 3.0, 1.0, 1e-5) == (INT32_MAX, 0)


def test_negative_gamma_flips_the_comparison():
    t, flip = fold_threshold(1.0, 0.0, -1.0, 0.0, 10.0, 1.0, 0.0)
    assert flip == 1 and t == 11  # +1 exactly while acc <= 10

"""Edge cases of fidkit.metrics found by the round-6 review: probabilities passed as logits, row order, tiny
spreads next to large columns in the neighbour metrics, the streams of the half-sample intervals, sFID's dims,
ADM's Inception Score chunks, and the FID bootstrap interval where it cannot cover."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special

import fidkit
from fidkit.errors import InputError
from fidkit.metrics import IntervalSpec, evaluate, inception_score


# --------------------------------------------------------------------------------------------- probabilities


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [2, 10, 1008])
def test_probabilities_passed_as_logits_are_refused(dtype, classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(300, classes)) * 4
    probs = scipy.special.softmax(logits, axis=1).astype(dtype)
    with pytest.raises(InputError, match=r"look like probabilities.*np\.log\(probs\)"):
        inception_score(probs)
    # The fix the message names gives the number of the logits themselves.
    np.testing.assert_allclose(inception_score(np.log(probs.astype(np.float64))).mean, inception_score(logits).mean,
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_probabilities_kept_as_logits_are_refused_by_evaluate_naming_the_side():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 50)) * 3
    a = fidkit.Features(rng.normal(size=(200, 8)), logits=scipy.special.softmax(logits, axis=1))
    b = fidkit.Features(rng.normal(size=(200, 8)), logits=logits)
    with pytest.raises(InputError, match="the logits of side a look like probabilities"):
        evaluate(a, b, "is")
    with pytest.raises(InputError, match="the logits of side b look like probabilities"):
        evaluate(b, a, "is")


def test_logits_that_are_not_probabilities_are_accepted():
    rng = np.random.default_rng(2)
    probs = scipy.special.softmax(rng.normal(size=(100, 20)), axis=1)
    # Non-negative scores whose rows do not all sum to 1; rows summing to 1 with a negative entry; one row off.
    cases = [np.abs(rng.normal(size=(100, 20))), probs.copy(), probs.copy()]
    cases[1][:, 0] -= 0.5
    cases[1][:, 1] += 0.5
    assert cases[1].min() < 0 and np.allclose(cases[1].sum(axis=1), 1.0)
    cases[2][7] *= 1.01
    for logits in cases:
        assert inception_score(logits).mean >= 1.0
    # Log-probabilities (non-positive, logsumexp 0) are logits.
    assert inception_score(np.log(probs)).mean == pytest.approx(inception_score(np.log(probs) + 3.0).mean, rel=1e-12)

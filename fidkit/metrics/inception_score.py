"""Inception Score (Salimans et al. 2016) from classifier logits.

    IS = exp( mean_i KL( p(y | x_i) || p(y) ) ),   p(y | x_i) = softmax(logits_i),   p(y) = mean_i p(y | x_i)

computed on each of ``splits`` consecutive chunks (rows ``i N // splits`` to ``(i + 1) N // splits``) and reported
as the mean and standard deviation (``ddof = 0``) over the chunks, in float64 throughout. ``split_size=m`` takes
chunks of ``m`` rows instead (rows ``i m`` to ``(i + 1) m``, the last one the ``N mod m`` rows left over, if any),
as ADM's evaluator (guided-diffusion ``evaluations/evaluator.py``) does with ``m = 5000`` and no shuffle:
``inception_score(logits, split_size=5000, shuffle=False).mean`` is its Inception Score (it reports the mean only).

The logits are used as given, all of their columns. For the customary number they are the 1008 outputs of the
2015 TensorFlow Inception's classifier computed *without its bias*: ``pool_3 @ W`` with ``W`` the weight of
``softmax/logits/MatMul``. That is what OpenAI's original code and ADM's evaluator feed to the softmax, and what
torch-fidelity calls ``logits_unbiased``; the 1008 classes include the 8 unused ones (background and padding), whose
tiny probabilities are kept, as every reference implementation keeps them.

``shuffle=True`` permutes the rows before splitting: ``numpy.random.default_rng(seed).permutation(N)`` with
``sampling="generator"`` (the default); with ``sampling="torch-fidelity"`` torch-fidelity 0.4.0's
(``np.random.RandomState(seed).permutation(N)``, seed 2020 by default), which then gives its
``isc_features_to_metric`` numbers to round-off. ``shuffle=False`` splits in the given order, as OpenAI's
improved-gan code does. The permutation is of positions: the same logits in the same order give the same score on
any engine or device (to rounding; a rounding-level change of the logits changes it at rounding level only), and
the same rows in another order (a ``torch.distributed`` gather of another world size) are other
chunks, whose score differs within the reported std; to compare exactly, compute from the same saved features.

Probabilities are not logits: this module applies the softmax, and a second softmax flattens every row to nearly
uniform (IS about 1 whatever the images), so a matrix whose every row is non-negative and sums to 1 within float
rounding is refused (:func:`check_logits`); ``np.log(probs)`` is a valid input.

One deliberate difference: a class whose probability underflows to 0 for every row of a chunk (logits more than
about 745 below the row maximum) contributes 0 to the KL here, its limit, where ``p * (log p - log q)`` evaluates
``0 * inf`` and torch-fidelity returns NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special

from fidkit._validate import check_features
from fidkit.errors import InputError
from fidkit.metrics._common import check_positive_int, check_sampling, check_seed, make_rng, permutation, plain_dict

__all__ = ["InceptionScoreResult", "inception_score", "check_logits"]

# Probabilities passed as logits: every row non-negative and summing to 1 within this many float32 unit
# round-offs per class (a softmax computed in float32, or in float64 and stored in float32, sums to 1 within about
# classes * 2^-24; the factor 4 is margin). Logits are scores defined up to a constant per row; no network's logits
# have every row non-negative with sum 1 (and the softmax of such rows is nearly uniform: IS ~ 1 whatever they are).
_PROBABILITY_ROUNDOFFS = 4.0


@dataclass(frozen=True)
class InceptionScoreResult:
    """Inception Score and how it was split. ``float(result)`` is :attr:`mean`.

    Attributes
    ----------
    mean, std : float
        Mean and standard deviation (``ddof = 0``) of the per-split scores.
    values : tuple of float
        The score of each split.
    splits, n, classes : int
        Splits (chunks), rows (images) and logit columns.
    split_size : int or None
        The chunk size asked for (``split_size=``), or None where `splits` cut the rows.
    shuffle : bool
    seed : int
    sampling : str
    """

    mean: float
    std: float
    values: tuple[float, ...]
    splits: int
    split_size: int | None
    n: int
    classes: int
    shuffle: bool
    seed: int
    sampling: str

    def __float__(self) -> float:
        return float(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples, None for NaN)."""
        return plain_dict(self)


def _split_score(logits: np.ndarray) -> float:
    """exp(mean KL(p(y|x) || p(y))) of one chunk of logits, in float64."""
    rows = np.asarray(logits, dtype=np.float64)
    # Each row less its max first (one rounding, relative to the difference): rows - logsumexp(rows) adds the log
    # of the exponentials' sum to the max and subtracts it again, which rounds that small log to the spacing of a
    # large max (logits with a common offset of 1e15 gave IS 1.42159 for 1.42288).
    shifted = rows - rows.max(axis=1, keepdims=True)
    log_p = shifted - scipy.special.logsumexp(shifted, axis=1, keepdims=True)
    p = np.exp(log_p)
    # p * (log p - log q), with 0 where p underflowed to 0: its limit, and the only way log q can be -inf
    # (those entries' 0 * inf is computed and then discarded, hence the silenced warnings).
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(p.mean(axis=0))
        terms = np.where(p > 0.0, p * (log_p - log_q), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def check_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """`logits` as a 2-D float array (:func:`~fidkit._validate.check_features`), refusing a probability matrix.

    The Inception Score applies the softmax itself: probabilities passed where logits are expected would be
    softmaxed a second time, which maps every row to nearly the uniform distribution and gives an IS of about 1
    whatever the images. A matrix whose every row is non-negative and sums to 1 within float rounding is such a
    matrix; the log-probabilities, ``np.log(probs)``, are valid logits (the softmax gives the probabilities back).

    Raises
    ------
    InputError
        As :func:`~fidkit._validate.check_features`, or a probability matrix (the message says what to pass).
    """
    array = check_features(logits, name)
    n_rows, classes = array.shape
    if n_rows == 0 or classes < 2:
        return array
    tolerance = _PROBABILITY_ROUNDOFFS * classes * float(np.finfo(np.float32).eps)
    # Row by row in blocks: no float64 copy of all the logits (50,000 x 1008 would be 400 MB).
    for start in range(0, n_rows, 8192):
        block = array[start : start + 8192]
        if block.min() < 0.0:
            return array
        sums = block.sum(axis=1, dtype=np.float64)
        if np.any(np.abs(sums - 1.0) > tolerance):
            return array
    raise InputError(
        f"{name} look like probabilities, not logits: every one of the {n_rows} rows is non-negative and sums to 1 "
        f"(within {tolerance:.1g}); the Inception Score applies the softmax itself, and on probabilities it would "
        "give about 1 whatever the images. Pass the logits (the classifier's scores before the softmax; fidkit's "
        "network keeps them with outputs=('features', 'logits')), or the log-probabilities, np.log(probs) "
        "(np.log(np.maximum(probs, np.finfo(probs.dtype).tiny)) where a probability is 0)"
    )


def inception_score(
    logits: Any,
    *,
    splits: int = 10,
    split_size: int | None = None,
    shuffle: bool = True,
    seed: int = 2020,
    sampling: str = "generator",
) -> InceptionScoreResult:
    """Inception Score of ``(N, classes)`` logits.

    Parameters
    ----------
    logits : array_like
        ``(N, classes)`` float logits (1008 unbiased Inception logits for the customary number, see the module
        docstring), finite, ``N >= splits``; not probabilities (pass ``np.log(probs)``).
    splits : int
        Consecutive chunks of (nearly) equal size (10 in torch-fidelity and improved-gan).
    split_size : int, optional
        Chunks of this many rows instead, the last one holding what is left (ADM's evaluator: 5000); then `splits`
        must be left at its default.
    shuffle : bool
        Permute the rows before splitting (torch-fidelity does, OpenAI's improved-gan code does not).
    seed : int
        Seed of the permutation (torch-fidelity's ``rng_seed`` is 2020).
    sampling : {"generator", "torch-fidelity"}
        ``"generator"``: ``numpy.random.default_rng(seed).permutation``; ``"torch-fidelity"``: ``RandomState``'s.
        Either permutes the positions of the rows as given (module docstring).

    Returns
    -------
    InceptionScoreResult

    Raises
    ------
    InputError
        Logits that are not a finite 2-D float array, fewer rows than splits, fewer than 2 classes, bad arguments;
        probabilities instead of logits (every row non-negative and summing to 1: :func:`check_logits`).

    Notes
    -----
    Cost: one softmax, ``O(N classes)``; memory: one chunk in float64 (``N / splits x classes``).
    """
    array = check_logits(logits)
    splits = check_positive_int(splits, "splits")
    if split_size is not None:
        split_size = check_positive_int(split_size, "split_size")
        if splits != 10:
            raise InputError(
                f"pass splits={splits} or split_size={split_size}, not both: splits cuts N rows into that many "
                "chunks, split_size into chunks of that many rows (the last one shorter)"
            )
    seed = check_seed(seed)
    sampling = check_sampling(sampling)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise InputError(f"shuffle must be True or False, got {shuffle!r}")
    n_rows, classes = array.shape
    if classes < 2:
        raise InputError(f"logits has {classes} column; the Inception Score needs the logits of at least 2 classes")
    if split_size is not None:
        bounds = list(range(0, n_rows, split_size)) + [n_rows]
        splits = len(bounds) - 1
    elif n_rows < splits:
        raise InputError(f"logits has {n_rows} rows for {splits} splits; every split needs at least one row")
    else:
        bounds = [index * n_rows // splits for index in range(splits + 1)]
    order = permutation(make_rng(seed, sampling), n_rows) if shuffle else None
    scores = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        chunk = array[order[start:stop]] if order is not None else array[start:stop]
        scores.append(_split_score(chunk))
    values = np.array(scores, dtype=np.float64)
    return InceptionScoreResult(
        mean=float(np.mean(values)),
        std=float(np.std(values)),
        values=tuple(scores),
        splits=splits,
        split_size=split_size,
        n=n_rows,
        classes=classes,
        shuffle=bool(shuffle),
        seed=seed,
        sampling=sampling,
    )

"""The Fréchet distance between two Gaussians and the linear algebra it is built on.

- :mod:`fidkit.frechet.distance`: :func:`frechet_distance`, :func:`fid_from_stats`, :func:`fid_from_arrays`
  and :class:`FrechetResult` (the routes, their diagnostics, TTUR's historical computation).
- :mod:`fidkit.frechet.factors`: square-root factors of covariances (:class:`SqrtFactor`, pivoted Cholesky,
  verification) and :func:`sqrt_factor`, which remembers the factor of each :class:`~fidkit.stats.Stats`.
"""

from fidkit.frechet.distance import (
    METHODS,
    FrechetResult,
    fid_from_arrays,
    fid_from_stats,
    frechet_distance,
)
from fidkit.frechet.factors import SqrtFactor, sqrt_factor

__all__ = [
    "FrechetResult",
    "frechet_distance",
    "fid_from_stats",
    "fid_from_arrays",
    "METHODS",
    "SqrtFactor",
    "sqrt_factor",
]

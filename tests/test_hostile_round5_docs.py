"""Hostile review, round 5: what the documentation promises against what fidkit does.

- 1: ``fid_from_arrays(method="ttur")``, the documented name, does not warn that it is an old name (it did, and
  ``"sqrtm"`` warned twice).
- 2: a warning fidkit logs (too many workers, a corrupt cache entry, a side not cached) is printed as
  ``fidkit: warning: ...`` and listed in ``--json``'s ``warnings``, as usage.md says of every warning.
- 3: a FID below 0.0001 is not printed as ``0.0000``.
- 4: ``fidkit stats``/``features`` warn when the statistics they keep come from weights other than the released
  file (``compute`` did; these printed an info line once per process, nothing with ``--quiet``).
"""

from __future__ import annotations

import warnings

import numpy as np

import fidkit
from fidkit.errors import FidkitWarning


def test_the_documented_ttur_method_does_not_warn_and_the_old_name_warns_once():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ttur = fidkit.fid_from_arrays(x, y, method="ttur")
    assert not [w for w in caught if issubclass(w.category, FidkitWarning)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = fidkit.fid_from_arrays(x, y, method="sqrtm")
    old_name = [w for w in caught if "older name" in str(w.message)]
    assert len(old_name) == 1 and old_name[0].filename == __file__  # pointed at the caller's line
    assert old.value == ttur.value

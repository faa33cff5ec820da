"""How fidkit writes a number that is not finite: ``null`` in JSON, ``n/a`` in text; never ``inf`` or ``NaN``.

A non-finite float in fidkit's results means "no value" (a TTUR run without an evaluation, a diagnostic a method
does not have, an interval end that overflowed). JSON has no spelling for it that every parser accepts, and a
table that prints ``inf`` reads as a measured number.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["NOT_A_NUMBER", "finite_or_none", "shown", "fid_text"]

#: What text output prints for a number that is not finite.
NOT_A_NUMBER = "n/a"


def finite_or_none(value: Any) -> Any:
    """`value` with every float that is not finite replaced by None, in dicts, lists and tuples (tuples become
    lists): ready for ``json.dumps(..., allow_nan=False)``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def shown(value: Any, spec: str = "") -> str:
    """`value` formatted with `spec`, or :data:`NOT_A_NUMBER` when it is a real number that is not finite."""
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        return NOT_A_NUMBER
    return format(value, spec)


def fid_text(value: float) -> str:
    """A FID as text: 4 decimals (what papers print), 4 significant digits below 0.01, where 4 decimals would
    print two near-identical sets as ``0.0000``; ``n/a`` when not finite."""
    if value != 0 and abs(value) < 0.01:
        return shown(value, ".3e")
    return shown(value, ".4f")

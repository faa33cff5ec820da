"""How fidkit writes what would print ambiguously: a number that is not finite (``null`` in JSON, ``n/a`` in text;
never ``inf`` or ``NaN``), and a file name in a message (:func:`shown_name`: on one line, as it is).

A non-finite float in fidkit's results means "no value" (a TTUR run without an evaluation, a diagnostic a method
does not have, an interval end that overflowed). JSON has no spelling for it that every parser accepts, and a
table that prints ``inf`` reads as a measured number.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

__all__ = ["NOT_A_NUMBER", "finite_or_none", "shown", "fid_text", "shown_name"]

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


#: The escapes of :func:`shown_name` that have a short form (those of a shell's ``$'...'``).
_SHORT_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown_name(name: str | bytes | os.PathLike) -> str:
    """A file name (or path) as a message shows it: as it is when every character prints, else in a shell's
    ``$'...'`` quoting, on one line and unambiguous.

    Names come from folders and archives that anyone may have written: a newline in one would break a warning in
    two (and the second line could read as fidkit's own ``fidkit: error:``), a byte that is not UTF-8 would show
    as a surrogate (``\\udcff``) that names no file, and a right-to-left mark would reorder what follows. Such a
    name is shown as bash and zsh read it back: ``b'bad\\n\\xff.png'`` (a newline and the byte 0xff) is shown as
    ``$'bad\\n\\xff.png'``, which ``rm`` accepts as typed. A name whose characters all print, spaces and letters
    of any script included, is shown unchanged (but one that itself begins with ``$'``).

    Parameters
    ----------
    name : str, bytes or os.PathLike
        The name; bytes and the surrogates of :func:`os.fsdecode` stand for the file system's raw bytes.

    Returns
    -------
    str
        One line of printable characters.
    """
    text = os.fsdecode(name)
    if text.isprintable() and not text.startswith("$'"):
        return text
    parts = []
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            parts.append(_SHORT_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode's surrogateescape holds it
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            parts.append(char)
        elif code < 0x80:
            parts.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    return "$'" + "".join(parts) + "'"

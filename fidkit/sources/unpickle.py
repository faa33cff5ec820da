"""Restricted unpickling of CIFAR python batches: what a crafted pickle can make the unpickler do, bounded.

A CIFAR batch is a pickle by format, and unpickling arbitrary data can run arbitrary code and allocate without
limit. :func:`load_restricted` reads one in two steps:

1. :func:`check_batch_opcodes` walks the opcodes once, following what each does to the unpickler's stack and memo,
   and refuses what no batch holds and the unpickler would build at any cost: a dict or set of more than a few
   keys, or with a number or a container as a key (keys crafted to share one hash make each insertion compare
   with every key before it: quadratic), a list or tuple of more entries than a batch can have images, a memo
   index beyond the opcodes before it (the unpickler grows its memo table to twice that index), and a counted
   opcode whose length the file does not hold (the unpickler reserves it before reading);
2. :class:`RestrictedUnpickler` rebuilds only numpy arrays and dtypes and plain containers (dict, list, tuple,
   str, bytes, numbers); any other global (a function, a class, ``os.system``) stops loading. What the allowed
   globals may allocate is bounded by the file's size (:data:`_UNPICKLE_BYTES_PER_FILE_BYTE` times it, plus
   1 MiB): a crafted file cannot ask for a 3 GB ``bytearray`` or array in 56 bytes.

The callers (:mod:`fidkit.sources.datasets`) turn the :class:`pickle.UnpicklingError` and the other errors a
damaged pickle raises into a :class:`~fidkit.errors.SourceError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RestrictedUnpickler", "check_batch_opcodes", "load_restricted"]


# What unpickling may allocate through the globals it calls, per byte of the file (plus 1 MiB):
# a genuine batch holds its pixels in the file itself, so it needs about 1x.
_UNPICKLE_BYTES_PER_FILE_BYTE = 4
_UNPICKLE_SLACK_BYTES = 2**20
# Rough bytes per element of the containers a global may build, for the check before building.
_BYTES_PER_ELEMENT = {
    bytes: 1, bytearray: 1, str: 4, list: 8, tuple: 8, set: 32, frozenset: 32, dict: 64
}


class _AllocationBudget:
    """Counts what the globals called while unpickling allocate, against a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def check(self, wanted: int, what: str) -> None:
        if wanted < 0 or self.used + wanted > self.max_bytes:
            raise pickle.UnpicklingError(
                f"{what} would allocate {wanted:,} bytes, more than the file's size allows "
                f"({self.max_bytes:,} bytes in all)"
            )

    def add(self, result: Any, what: str) -> Any:
        size = int(result.nbytes) if isinstance(result, np.ndarray) else sys.getsizeof(result)
        self.check(size, what)
        self.used += size
        return result


def _array_bytes(shape: Any, dtype: Any) -> int:
    try:
        dims = [int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
        itemsize = int(np.dtype(dtype).itemsize) if not isinstance(dtype, np.dtype) else int(dtype.itemsize)
    except (TypeError, ValueError, OverflowError):
        return 0  # numpy will refuse it itself
    total = itemsize
    for dim in dims:
        total *= max(dim, 0)
    return total


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays and plain Python containers.

    CIFAR's python batches are pickled dicts of numpy arrays, lists, strings and numbers. Those
    need only the globals allowed here; anything else raises :class:`pickle.UnpicklingError`
    before it is called, so a crafted file cannot run code. With `max_bytes`, what the allowed
    globals may allocate in all is bounded too (checked before each call where the size is known
    from the arguments, and after it otherwise), so a few bytes cannot ask for gigabytes. With `max_keys`, a call
    of ``dict``, ``set`` or ``frozenset`` on more entries is refused before it hashes them.
    """

    def __init__(self, file: Any, *, max_bytes: int | None = None, max_keys: int | None = None, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._budget = _AllocationBudget(max_bytes) if max_bytes is not None else None
        self._max_keys = max_keys

    def find_class(self, module: str, name: str) -> Any:
        found = self._find_allowed(module, name)
        if self._budget is None:
            return found
        return self._guarded(found, f"{module}.{name}")

    def _guarded(self, found: Any, what: str) -> Any:
        budget = self._budget
        assert budget is not None
        max_keys = self._max_keys
        if found is np.ndarray:
            # Only ever an argument of _reconstruct in genuine pickles; called directly it would
            # allocate any shape. The token is mapped back by the guarded _reconstruct.
            return _NDARRAY_TOKEN
        if found is _numpy_multiarray_attr("_reconstruct"):

            def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
                subtype = np.ndarray if subtype is _NDARRAY_TOKEN else subtype
                budget.check(_array_bytes(shape, dtype), what)
                return budget.add(found(subtype, shape, dtype), what)

            return reconstruct
        if found is _numpy_multiarray_attr("scalar"):

            def scalar(dtype: Any, *args: Any) -> Any:
                budget.check(_array_bytes((), dtype), what)
                return budget.add(found(dtype, *args), what)

            return scalar
        if isinstance(found, type) and found in _BYTES_PER_ELEMENT:

            def build(*args: Any, **kwargs: Any) -> Any:
                for arg in args[:1]:
                    if (
                        max_keys is not None and found in (dict, set, frozenset) and hasattr(arg, "__len__")
                        and len(arg) > max_keys
                    ):
                        # Hashing keys crafted to collide is quadratic: refused before, as the opcodes are.
                        raise pickle.UnpicklingError(
                            f"{what} of {len(arg):,} entries: a CIFAR batch holds no dict or set of more than "
                            f"{max_keys}"
                        )
                    if found in (bytes, bytearray) and isinstance(arg, int) and not isinstance(arg, bool):
                        budget.check(arg, what)  # bytes(n): n zero bytes
                    elif hasattr(arg, "__len__"):
                        budget.check(len(arg) * _BYTES_PER_ELEMENT[found], what)
                return budget.add(found(*args, **kwargs), what)

            return build
        if found is _latin1_encode:
            return found  # the output is as long as its input, which the file holds
        if callable(found):

            def call(*args: Any, **kwargs: Any) -> Any:
                return budget.add(found(*args, **kwargs), what)

            return call
        return found


    _SAFE_BUILTINS = frozenset(
        {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
         "complex", "bool"}
    )

    def _find_allowed(self, module: str, name: str) -> Any:
        if module in {"numpy.core.multiarray", "numpy._core.multiarray"} and name == "_reconstruct":
            return _numpy_multiarray_attr("_reconstruct")
        if module in {"numpy.core.multiarray", "numpy._core.multiarray"} and name == "scalar":
            return _numpy_multiarray_attr("scalar")
        if module in {"numpy.core.numeric", "numpy._core.numeric"} and name == "_frombuffer":
            return _numpy_numeric_attr("_frombuffer")
        if module == "numpy" and name in {"ndarray", "dtype"}:
            return getattr(np, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            # numpy >= 1.25 pickles dtypes through their classes (numpy.dtypes.UInt8DType).
            import numpy.dtypes as numpy_dtypes

            candidate = getattr(numpy_dtypes, name, None)
            if isinstance(candidate, type) and issubclass(candidate, np.dtype):
                return candidate
        if module in {"builtins", "__builtin__"} and name in self._SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "_codecs" and name == "encode":
            # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1");
            # no other codec is needed (and some, like hex, would double what they are given).
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only numpy arrays and plain containers are allowed"
        )


_NDARRAY_TOKEN = object()
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if not isinstance(obj, str) or str(encoding).lower() not in _LATIN1_NAMES:
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode with {str(encoding)!r}: only latin1 text is expected in a CIFAR batch"
        )
    return obj.encode("latin1", errors)


def _numpy_multiarray_attr(name: str) -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


def _numpy_numeric_attr(name: str) -> Any:
    try:
        from numpy._core import numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import numeric  # type: ignore[no-redef]
    return getattr(numeric, name)


class _Built:
    """What the opcode walk of :func:`check_batch_opcodes` knows of one object on the unpickler's stack."""

    __slots__ = ("kind", "keys", "items")

    def __init__(self, kind: str, keys: int = 0, items: int = 0) -> None:
        self.kind = kind  # "str", "number", "container" or "other" (a call's result: not known)
        self.keys = keys  # keys a dict or set holds (each one hashed against the others)
        self.items = items  # entries a list or tuple holds


_MARK = _Built("mark")
#: Opcodes that push a number, a boolean or None: never a key of a CIFAR batch.
_NUMBER_OPCODES = frozenset(
    {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "NONE", "NEWTRUE",
     "NEWFALSE"}
)
_STRING_OPCODES = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "UNICODE",
     "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
)
_NEW_CONTAINERS = frozenset({"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET", "BYTEARRAY8"})


def check_batch_opcodes(content: bytes | bytearray, *, max_keys: int, max_items: int) -> None:
    """Walk a pickle's opcodes, following what each does to the unpickler's stack and memo, and refuse what a CIFAR
    batch never holds before the unpickler builds it.

    A batch is a dict of a few string keys holding an array, lists of one entry per image and a string or two.
    Refused (:class:`pickle.UnpicklingError`): a dict or set of more than `max_keys` keys (keys
    crafted to share one hash make every insertion compare with all before it: 40,000 such keys take seconds,
    a file of the allowed size hours), a number or a container as a dict key, a list or tuple of more than
    `max_items` entries, and a memo index beyond the opcodes read so far (the unpickler grows its
    memo table to twice the largest index: 7 bytes could ask for gigabytes). Also raises what
    :func:`pickletools.genops` raises on a length the file does not hold. One pass, linear in the file's size.
    """
    stack: list[_Built] = []
    memo: dict[int, _Built] = {}

    def pop(count: int = 1) -> list[_Built]:
        if len(stack) < count:
            raise pickle.UnpicklingError("malformed pickle: an opcode takes more from the stack than it holds")
        taken = stack[len(stack) - count:]
        del stack[len(stack) - count:]
        return taken

    def to_mark() -> list[_Built]:
        for index in range(len(stack) - 1, -1, -1):
            if stack[index] is _MARK:
                taken = stack[index + 1:]
                del stack[index:]
                return taken
        raise pickle.UnpicklingError("malformed pickle: an opcode needs a MARK that is not there")

    def add_keys(target: _Built, keys: Sequence[_Built]) -> None:
        for key in keys:
            if key.kind in ("number", "container"):
                raise pickle.UnpicklingError(
                    "a dict key or set member that is a number or a container: a CIFAR batch's keys are strings"
                )
        target.keys += len(keys)
        if target.keys > max_keys:
            raise pickle.UnpicklingError(
                f"a dict or set of more than {max_keys} keys: a CIFAR batch is a dict of a few names"
            )

    def add_items(target: _Built, count: int) -> None:
        target.items += count
        if target.items > max_items:
            raise pickle.UnpicklingError(
                f"a list or tuple of more than {max_items:,} entries: more than a CIFAR batch has images"
            )

    for position, (opcode, arg, _) in enumerate(pickletools.genops(content)):
        name = opcode.name
        simple = _SIMPLE_OPCODES.get(name)
        # Most opcodes (a number, a string, a global, a call): taken and left as pickletools says.
        if simple is not None:
            takes, mark, leaves = simple
            if mark:
                to_mark()
            if takes:
                pop(takes)
            if leaves is not None:
                stack.append(leaves if leaves is _NUMBER or leaves is _STRING else _Built(leaves.kind))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not isinstance(arg, int) or not 0 <= arg <= position:
                raise pickle.UnpicklingError(f"a memo index {arg} beyond the {position} opcodes before it")
            if stack:
                memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            if stack:
                memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _Built("other")) if isinstance(arg, int) else _Built("other"))
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "BUILD":
            pop()  # the state; the object it is set on stays what it was (a dict given no state keeps its keys)
            if not stack:
                raise pickle.UnpicklingError("malformed pickle: BUILD with nothing to build")
        elif name == "DUP":
            stack.append(pop()[0])
            stack.append(stack[-1])
        elif name in ("SETITEMS", "ADDITEMS", "APPENDS"):
            taken = to_mark()
            if not stack:
                raise pickle.UnpicklingError(f"malformed pickle: {name} with nothing to add to")
            if name == "APPENDS":
                add_items(stack[-1], len(taken))
            else:
                add_keys(stack[-1], taken[::2] if name == "SETITEMS" else taken)
        elif name in ("SETITEM", "APPEND"):
            taken = pop(2 if name == "SETITEM" else 1)
            if not stack:
                raise pickle.UnpicklingError(f"malformed pickle: {name} with nothing to add to")
            if name == "SETITEM":
                add_keys(stack[-1], taken[:1])
            else:
                add_items(stack[-1], 1)
        elif name in ("DICT", "FROZENSET", "LIST", "TUPLE"):
            taken = to_mark()
            built = _Built("container")
            if name in ("LIST", "TUPLE"):
                add_items(built, len(taken))
            else:
                add_keys(built, taken[::2] if name == "DICT" else taken)
            stack.append(built)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            pop(count)
            stack.append(_Built("container", items=count))
        elif name == "STOP":
            break
        else:  # pragma: no cover - an opcode newer than this table: the unpickler of this Python decides
            raise pickle.UnpicklingError(f"the pickle opcode {name}, which no CIFAR batch uses")


def _simple_opcodes() -> dict[str, tuple[int, bool, _Built | None]]:
    """For each opcode that only takes objects off the stack and leaves at most one new one: how many it takes
    (besides those down to a MARK, when it takes those too) and what it leaves (shared records for a number or a
    string, which nothing adds to; a template for a new container or a call's result, copied for each)."""
    handled_apart = {
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET", "MARK", "DUP", "SETITEMS",
        "ADDITEMS", "APPENDS", "SETITEM", "APPEND", "DICT", "FROZENSET", "LIST", "TUPLE", "TUPLE1", "TUPLE2",
        "TUPLE3", "STOP", "BUILD",
    }
    table: dict[str, tuple[int, bool, _Built | None]] = {}
    for opcode in pickletools.opcodes:
        if opcode.name in handled_apart:
            continue
        before = opcode.stack_before
        mark = pickletools.markobject in before
        takes = before.index(pickletools.markobject) if mark else len(before)
        if opcode.name in _NUMBER_OPCODES:
            leaves: _Built | None = _NUMBER
        elif opcode.name in _STRING_OPCODES:
            leaves = _STRING
        elif opcode.name in _NEW_CONTAINERS:
            leaves = _Built("container")
        else:
            leaves = _Built("other")
        table[opcode.name] = (takes, mark, leaves if opcode.stack_after else None)
    return table


_NUMBER = _Built("number")
_STRING = _Built("str")
_SIMPLE_OPCODES = _simple_opcodes()


def load_restricted(content: bytes | bytearray, *, max_keys: int, max_items: int) -> Any:
    """Unpickle `content`, a CIFAR python batch: its opcodes checked first (:func:`check_batch_opcodes`), then
    :class:`RestrictedUnpickler` with an allocation budget from its size, decoding Python 2 strings as latin1
    (how numpy arrays pickled by Python 2, the original CIFAR files, decode).

    Raises
    ------
    pickle.UnpicklingError
        What no batch holds, or a global that is not allowed; and what a damaged pickle raises (EOFError,
        ValueError, ...).
    """
    check_batch_opcodes(content, max_keys=max_keys, max_items=max_items)
    max_bytes = _UNPICKLE_BYTES_PER_FILE_BYTE * len(content) + _UNPICKLE_SLACK_BYTES
    unpickler = RestrictedUnpickler(io.BytesIO(content), encoding="latin1", max_bytes=max_bytes, max_keys=max_keys)
    return unpickler.load()

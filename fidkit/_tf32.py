"""TF32 in torch: turned off (or on) for one computation, and the caller's setting put back exactly (ground floor).

torch has two ways to say whether float32 convolutions and products may run in TF32 (a 10-bit mantissa):

* the legacy flags, ``torch.backends.cuda.matmul.allow_tf32`` / ``torch.set_float32_matmul_precision`` and
  ``torch.backends.cudnn.allow_tf32``;
* from torch 2.9, ``fp32_precision`` (``"none"``: inherit, ``"ieee"``, ``"tf32"``, ``"bf16"``) on a tree: the global
  one (``torch.backends.fp32_precision``), one per backend (``torch.backends.cudnn`` for CUDA, oneDNN's) and one per
  operation (``torch.backends.cuda.matmul``, ``torch.backends.cudnn.conv``, ``torch.backends.cudnn.rnn``, oneDNN's
  ``matmul``, ``conv``, ``rnn``). A kernel reads its operation's value, an inheriting one resolved through the
  backend's and then the global one.

Once a program used the tree, reading a legacy flag raises ("mix of the legacy and new APIs"), and the legacy setters
are no way to make the arithmetic exact: ``cudnn.allow_tf32 = False`` stores an inheriting ``"none"`` in cuDNN's
operations, which then follow a global ``"tf32"``. So on a torch with the tree, :func:`float32_mode` sets the tree
alone: each backend's value to the one wanted, and the operations that do not inherit (an explicit ``"tf32"``, say)
to it too; afterwards exactly these are put back to what was stored. The operations that inherit are never written,
which keeps torch's own defaults as they are (cuDNN's operations start out inheriting, yet TF32 when nothing above
them is set: a state no setter can make again). The legacy flags are not touched; during the call a legacy getter
read elsewhere may find the two APIs disagreeing and raise. On a torch without the tree, the legacy flags are set
and put back.

These settings are process-wide: another thread running torch during the call computes under them too. fidkit's own
calls in several threads share one change (the last to end puts the program's settings back), and a call in the
other mode waits for them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

__all__ = ["float32_mode", "tf32_possible"]

#: The backends of the tree and their operations. torch's public attributes are not used for the backends' values:
#: in torch 2.13 ``torch.backends.mkldnn.fp32_precision = ...`` writes the global value.
_BACKENDS = {"cuda": ("matmul", "conv", "rnn"), "mkldnn": ("matmul", "conv", "rnn")}


def _has_precision_tree(torch: Any) -> bool:
    """True on a torch (>= 2.9) whose ``fp32_precision`` tree has the values ``"none"`` and ``"ieee"``."""
    try:
        return torch._C._get_fp32_precision_getter("generic", "all") in ("none", "ieee", "tf32", "bf16")
    except (AttributeError, RuntimeError, TypeError):  # absent, or private and changed: the legacy flags then
        return False


def _get(torch: Any, backend: str, op: str) -> str:
    """The value in effect (an inheriting value resolved through the parents, as the kernels read it)."""
    return str(torch._C._get_fp32_precision_getter(backend, op))


def _set(torch: Any, backend: str, op: str, value: str) -> None:
    torch._C._set_fp32_precision_setter(backend, op, value)


def _inherits(torch: Any, node: tuple[str, str], parent: tuple[str, str], parent_stored: str) -> bool:
    """Whether `node` follows `parent`: torch's getter answers with the inherited value, so the parent is set to
    another value for a moment to see whether the node's value follows it (then `parent_stored` goes back)."""
    value = _get(torch, *node)
    if value == "none":
        return True
    probe = "ieee" if value != "ieee" else "tf32"  # both valid on every backend
    _set(torch, *parent, probe)
    try:
        return _get(torch, *node) == probe
    finally:
        _set(torch, *parent, parent_stored)


#: The calls inside :func:`float32_mode` at this moment, in all threads: the settings are the process's, so the first
#: call sets them and the last one puts back the program's (a call in the other mode waits for the others to end).
_ACTIVE = threading.Condition()
_active: dict[str, Any] = {"calls": 0, "tf32": None, "undo": None}
#: How deep this thread is inside float32_mode calls.
_this_thread = threading.local()


@contextmanager
def float32_mode(torch: Any, tf32: bool = False) -> Iterator[None]:
    """float32 convolutions and products in full float32 (IEEE) for the duration, or with TF32 on the GPU when
    `tf32` (``precision="tf32"``); every setting of the caller is put back afterwards, through the API it uses.

    Calls in several threads at once share one change of the settings: the last to end puts back the program's.
    A call in the other mode (TF32 while another thread computes exactly, or the reverse) waits until they end.

    Parameters
    ----------
    torch : module
        The imported torch.
    tf32 : bool
        Let cuBLAS and cuDNN use TF32 (oneDNN on the CPU stays IEEE).
    """
    depth = getattr(_this_thread, "depth", 0)
    if depth and _active["tf32"] != tf32:
        # Waiting for the calls of the other mode to end would wait for this thread's own: for ever.
        raise RuntimeError(
            f"fidkit: a {'TF32' if tf32 else 'full float32'} network call inside a "
            f"{'full float32' if tf32 else 'TF32'} one in the same thread (a forward hook?); make the calls one "
            "after the other"
        )
    with _ACTIVE:
        _ACTIVE.wait_for(lambda: _active["calls"] == 0 or _active["tf32"] == tf32)
        if _active["calls"] == 0:
            undo = ExitStack()
            undo.enter_context((_tree_mode if _has_precision_tree(torch) else _legacy_mode)(torch, tf32))
            _active.update(tf32=tf32, undo=undo)
        _active["calls"] += 1
    _this_thread.depth = depth + 1
    try:
        yield
    finally:
        _this_thread.depth = depth
        with _ACTIVE:
            _active["calls"] -= 1
            if _active["calls"] == 0:
                undo, _active["undo"], _active["tf32"] = _active["undo"], None, None
                try:
                    undo.close()
                finally:
                    _ACTIVE.notify_all()


@contextmanager
def _tree_mode(torch: Any, tf32: bool) -> Iterator[None]:
    """:func:`float32_mode` on a torch with the ``fp32_precision`` tree."""
    generic = ("generic", "all")
    generic_stored = _get(torch, *generic)  # the root: what is read is what is stored
    put_back: list[tuple[str, str, str]] = []  # (backend, op, stored value), in the order of writing
    try:
        for backend, ops in _BACKENDS.items():
            wanted = "tf32" if tf32 and backend == "cuda" else "ieee"
            node = (backend, "all")
            stored = "none" if _inherits(torch, node, generic, generic_stored) else _get(torch, *node)
            explicit = {op: _get(torch, backend, op) for op in ops if not _inherits(torch, (backend, op), node, stored)}
            put_back.append((backend, "all", stored))
            _set(torch, backend, "all", wanted)
            for op, value in explicit.items():
                if value != wanted:
                    put_back.append((backend, op, value))
                    _set(torch, backend, op, wanted)
        yield
    finally:
        for backend, op, value in reversed(put_back):
            _set(torch, backend, op, value)


@contextmanager
def _legacy_mode(torch: Any, tf32: bool) -> Iterator[None]:
    """:func:`float32_mode` on a torch without the ``fp32_precision`` tree: the legacy flags."""
    # The matmul precision by name, not allow_tf32: putting back allow_tf32=True would turn "medium" into "high".
    saved = (torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32))
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def tf32_possible(torch: Any) -> bool:
    """False only where torch's settings say float32 products on the GPU (cuBLAS) are IEEE; any doubt: True."""
    try:
        if _has_precision_tree(torch):
            # What cuBLAS reads: its operation's value, resolved through cuDNN's backend value and the global one.
            return _get(torch, "cuda", "matmul") not in ("none", "ieee")
        return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"
    except Exception:  # noqa: BLE001 - an unreadable switch is treated as TF32 on
        return True

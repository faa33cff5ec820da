"""The device grammar: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``tensorrt``, ``tensorrt:N``.

On the ground floor, so that the command line's argument check (:mod:`fidkit._argtypes`), the options
(:mod:`fidkit.options`) and the runtimes (:mod:`fidkit.inception.providers`) read device strings the same
way without importing upward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fidkit.errors import InputError

__all__ = ["Device", "PROVIDER_NAMES", "parse_device"]

#: The onnxruntime provider of each device kind.
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_KINDS = ("auto", *PROVIDER_NAMES)


@dataclass(frozen=True)
class Device:
    """A parsed device string: the kind and the GPU index (0 unless ``cuda:N`` / ``tensorrt:N``)."""

    kind: str
    index: int = 0

    @property
    def provider(self) -> str:
        """The onnxruntime provider name (not defined for ``auto``)."""
        return PROVIDER_NAMES[self.kind]

    def __str__(self) -> str:
        return self.kind if self.kind in ("auto", "cpu") or self.index == 0 else f"{self.kind}:{self.index}"


def parse_device(text: Any) -> Device:
    """Parse ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``tensorrt``, ``tensorrt:N``; InputError otherwise."""
    if not isinstance(text, str):
        raise InputError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:1', not {text!r}")
    kind, colon, index_text = text.partition(":")
    if kind not in _KINDS or (colon and kind in ("auto", "cpu")):
        raise InputError(f"device must be auto, cpu, cuda, cuda:N, tensorrt or tensorrt:N, not {text!r}")
    if not colon:
        return Device(kind)
    if not (index_text.isascii() and index_text.isdigit()) or (len(index_text) > 1 and index_text[0] == "0"):
        raise InputError(f"device {text!r}: the GPU index after ':' must be a number, e.g. cuda:1")
    return Device(kind, int(index_text))

"""Small images, folders and archive members that the tests of several subjects build, and reading them back.

Each helper keeps the name it had in the test module it came from (``_pixels`` and ``_all_pixels`` were in
test_sources.py and the hostile-input modules alike), so the tests read as they did there.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def _pixels(seed: int, height: int = 8, width: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _png(seed: int, height: int = 8, width: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(seed, height, width)).save(buffer, format="PNG")
    return buffer.getvalue()


def _all_pixels(source, batch_size: int = 4) -> np.ndarray:
    return np.concatenate(list(source.batches(batch_size)), axis=0)


def _folder(root: Path, n: int = 6, start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + n):
        (root / f"{index:03d}.png").write_bytes(_png(index))
    return root


def _tar_member(name: str, data: bytes, **fields) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, (io.BytesIO(data) if info.isreg() else None)


def _noise(side: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def _count(source, batch_size: int = 4) -> int:
    return sum(len(batch) for batch in source.batches(batch_size))

"""Small images, folders and archive members that the tests of several subjects build, and reading them back.

Each helper keeps the name it had in the test module it came from (``_pixels`` and ``_all_pixels`` were in
test_sources.py and the hostile-input modules alike), so the tests read as they did there.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
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


# Adam7, the PNG interlace: each pass's (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_rows(samples: np.ndarray, bit_depth: int) -> bytes:
    """Filter type 0 rows of `samples` ``(H, W, C)``: a zero byte, then the samples packed big-endian, MSB first."""
    rows = []
    for row in samples:
        flat = row.reshape(-1)
        if bit_depth == 16:
            packed = flat.astype(">u2").tobytes()
        elif bit_depth == 8:
            packed = flat.astype(np.uint8).tobytes()
        else:
            bits = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1)[:, 8 - bit_depth :]
            packed = np.packbits(bits.reshape(-1)).tobytes()  # the row's last byte padded with zero bits
        rows.append(b"\x00" + packed)
    return b"".join(rows)


def _png_file(samples: np.ndarray, bit_depth: int, colour_type: int, *, interlace: int = 0, keep: int | None = None,
              idat_chunks: int = 1) -> bytes:
    """A PNG of `samples` ``(H, W, C)`` written byte by byte (Pillow writes no interlaced PNG), any bit depth and
    colour type; `keep` cuts the filtered image data to that many bytes before it is compressed: a complete zlib
    stream with valid CRCs that holds too few rows."""
    height, width = samples.shape[:2]
    if interlace:
        passes = [samples[row::row_step, column::column_step] for column, row, column_step, row_step in _ADAM7]
        raw = b"".join(_png_rows(part, bit_depth) for part in passes if part.shape[0] and part.shape[1])
    else:
        raw = _png_rows(samples, bit_depth)
    compressed = zlib.compress(raw[:keep] if keep is not None else raw)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    chunks = [_png_chunk(b"IHDR", header)]
    if colour_type == 3:
        levels = np.linspace(0, 255, 2**bit_depth).astype(np.uint8)
        chunks.append(_png_chunk(b"PLTE", np.repeat(levels[:, None], 3, axis=1).tobytes()))
    step = -(-len(compressed) // idat_chunks)
    chunks += [_png_chunk(b"IDAT", compressed[start : start + step]) for start in range(0, len(compressed), step)]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b"")


def _png_raw_length(data: bytes) -> int:
    """Bytes the image data of the PNG `data` (IDAT chunks) inflates to."""
    position, compressed = 8, b""
    while position < len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT":
            compressed += data[position + 8 : position + 8 + length]
        position += 12 + length
    return len(zlib.decompress(compressed))


def _png_row_ends(height: int, width: int, bit_depth: int, samples: int, interlace: int) -> list[int]:
    """Where each row of a PNG's filtered image data ends (pass after pass when interlaced): a stream cut there
    holds whole rows, which Pillow decodes without a word (a cut inside a row it finds truncated)."""
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    ends, position = [], 0
    for column, row, column_step, row_step in passes:
        columns, rows = len(range(column, width, column_step)), len(range(row, height, row_step))
        for _ in range(rows if columns else 0):
            position += 1 + (columns * samples * bit_depth + 7) // 8
            ends.append(position)
    return ends

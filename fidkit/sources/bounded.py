"""Reading an image file's bytes with memory bounded by what its image needs.

A zip member of zeros declares hundreds of MB in a few KB, and a file may carry far more than its image
(data appended after it). :func:`read_image_bytes` reads the first :data:`HEAD_BYTES`, learns the image's pixel
count from them (Pillow, or the PNG, WebP, JPEG or TIFF header when Pillow needs more), and reads the rest only
when the file's size fits an image of that many pixels (:func:`fidkit.sources.decode.max_file_bytes`); otherwise
it is a bad file (:class:`~fidkit.errors.ImageError`). Archive members and the files of a folder go through it
alike, so the same image gets the same verdict wherever it is stored.

A TIFF whose directory follows its pixels (libtiff writes compressed TIFFs so) or with several pages, and an
animated PNG or WebP, are not bounded by their first page or frame: only the global limit bounds them (a member
that claims to be one is read whole, up to that limit).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from typing import IO

from PIL import Image

from fidkit.errors import ImageError
from fidkit.sources.decode import max_file_bytes

__all__ = ["HEAD_BYTES", "read_image_bytes"]

# A member larger than this is read in two steps: its first bytes, enough for Pillow to tell the format
# and pixel size of nearly any image file; then, once those show that the member's declared size fits an
# image of that size, the rest. A member no larger is read whole.
HEAD_BYTES = 64 * 2**10
# How far a JPEG's markers are followed for its frame header when they do not fit in the head: the room
# for metadata that max_file_bytes grants every image.
_MAX_HEADER_BYTES = 16 * 2**20
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# JPEG markers without a length (TEM, RST0-7) and frame headers (SOF0-15 but DHT, JPG and DAC).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def read_image_bytes(
    stream: IO[bytes], member: str, size: int, cut_short: Callable[[int], Exception], *, start: int | None = None
) -> bytes:
    """The `size` bytes of `member` from `stream`, which stands at the member's first byte.

    Memory follows what the image needs, not what the member declares (a zip member of zeros declares
    hundreds of MB in a few KB): a member larger than :data:`HEAD_BYTES` is refused as a bad file
    (:class:`ImageError`) after its first bytes when they start no image, or an image whose own pixels
    could not need `size` bytes (:func:`max_file_bytes` of its pixel count). Only then is the rest read.
    `cut_short(n)` is the error for a stream that ends after n bytes.

    The result is ``bytes``, which the decoder reads in place (``io.BytesIO`` copies a ``bytearray``). Given
    `start`, the member's first byte in a stream that seeks cheaply (a file), it is read again from there in one
    read: no second copy of the member is ever held. Otherwise (a compressed stream, which would decompress again
    to seek back) the rest is read after the head, and the two are joined once.
    """
    head = bytearray()

    def read_head(wanted: int) -> bool:
        """Read on until the head holds `wanted` bytes; False if the member is shorter. Reads go on in
        steps of :data:`HEAD_BYTES` but never past the member (a compressed tar would seek back)."""
        end = min(size, max(wanted, len(head) + HEAD_BYTES))
        while len(head) < min(wanted, size):
            chunk = stream.read(end - len(head))
            if not chunk:
                break
            head.extend(chunk)
        return len(head) >= wanted

    if not read_head(min(size, HEAD_BYTES)):
        raise cut_short(len(head))
    if len(head) < size:
        _check_image_head(member, head, size, read_head)
    if len(head) == size:
        return bytes(head)
    if start is not None:
        stream.seek(start)
        data = stream.read(size)
    else:
        data = b"".join((head, stream.read(size - len(head))))
    if len(data) < size:
        raise cut_short(len(data))
    return data


def _check_image_head(member: str, head: bytearray, size: int, read_head: Callable[[int], bool]) -> None:
    """Raise :class:`ImageError` unless `head`, the first bytes of `member`, starts an image file that may be
    `size` bytes long. `read_head(n)` reads on until the head holds n bytes (a JPEG's markers, followed)."""
    pixels = _pixels_by_pillow(member, bytes(head))
    if pixels is None:
        pixels = _pixels_by_header(head, read_head)
    if _animated(head):
        # Each frame is another image of the first frame's size: the frames, not the pixels, set the file's size.
        # Only the global limit bounds it (decoding reads the first frame).
        return
    tiff = _tiff_first_page(head, size)
    if tiff is not None and tiff[1]:
        # A TIFF may keep its directory after its pixels (libtiff writes compressed ones so), and a
        # multi-page TIFF holds more than its first page: only the global limit bounds it.
        return
    if pixels is None and tiff is not None:
        pixels = tiff[0]
    if pixels is None:
        raise ImageError(
            f"{member}: not an image Pillow can read (its first {len(head):,} bytes start no image file); the "
            f"rest of its {size:,} bytes was not read"
        )
    if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
        # Decoding refuses it (see fidkit.sources.decode): none of the rest is needed.
        raise _bomb_error(member, f"{pixels} pixels exceeds the limit of {Image.MAX_IMAGE_PIXELS}")
    limit = max_file_bytes(pixels)
    if limit is not None and size > limit:
        raise ImageError(
            f"{member}: {size:,} bytes, more than an image of its {pixels:,} pixels can take ({limit:,} bytes): "
            "it holds more than its image (a decompression bomb, or data appended to an image); the rest of it "
            "was not read"
        )


def _pixels_by_pillow(member: str, head: bytes) -> int | None:
    """The pixel count Pillow reads from the head of an image file, or None when it cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # about the head being cut, or a large image: decoding will say
            with Image.open(io.BytesIO(head)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        # Far over the pixel limit: decoding would refuse it, so none of the rest is needed.
        raise _bomb_error(member, str(exc)) from exc
    except Exception:  # noqa: BLE001 - Pillow raises anything on a cut or foreign head; the header says more
        return None
    return int(width) * int(height)


def _bomb_error(member: str, detail: str) -> ImageError:
    # The words of fidkit.sources.decode for the same refusal.
    return ImageError(
        f"{member}: refused as a possible decompression bomb ({detail}); if the image is genuine, raise "
        "PIL.Image.MAX_IMAGE_PIXELS before computing"
    )


def _pixels_by_header(head: bytearray, read_head: Callable[[int], bool]) -> int | None:
    """The pixel count the header of a PNG, WebP or JPEG file gives, for when Pillow cannot tell it from the
    head: PNG and JPEG metadata (text chunks, ICC profiles) longer than the head, WebP (Pillow's decoder
    needs the whole file)."""
    if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack_from(">II", head, 16)
        return width * height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = bytes(head[12:16])
        if chunk == b"VP8X":
            return (1 + int.from_bytes(head[24:27], "little")) * (1 + int.from_bytes(head[27:30], "little"))
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack_from("<HH", head, 26)
            return (width & 0x3FFF) * (height & 0x3FFF)
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = struct.unpack_from("<I", head, 21)[0]
            return ((bits & 0x3FFF) + 1) * (((bits >> 14) & 0x3FFF) + 1)
        return None
    if head[:3] == b"\xff\xd8\xff":
        position = 2
        while position < _MAX_HEADER_BYTES and read_head(position + 9):
            if head[position] != 0xFF:
                return None
            marker = head[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
            elif marker in _JPEG_STANDALONE:
                position += 2
            elif marker in _JPEG_FRAME:
                height, width = struct.unpack_from(">HH", head, position + 5)
                return width * height or None
            elif marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
                return None
            else:
                length = struct.unpack_from(">H", head, position + 2)[0]
                if length < 2:  # a segment's length counts its own two bytes
                    return None
                position += 2 + length
    return None


def _animated(head: bytearray) -> bool:
    """Whether `head` starts an animated PNG (an ``acTL`` chunk before the image data) or an animated WebP (the
    animation flag of its ``VP8X`` chunk)."""
    if head.startswith(_PNG_MAGIC):
        control, data = head.find(b"acTL"), head.find(b"IDAT")
        return control >= 0 and (data < 0 or control < data)
    return head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and len(head) > 20 and bool(head[20] & 0x02)


def _tiff_first_page(head: bytearray, size: int) -> tuple[int | None, bool] | None:
    """None unless `head` starts a TIFF file of `size` bytes; else (the pixels of its first page, or None when
    its first directory gives none; whether the first page does not bound the file's size: a directory
    beyond the head, or another page after the first)."""
    magic = bytes(head[:4])
    if magic not in _TIFF_MAGIC:
        return None
    order = "<" if magic[:2] == b"II" else ">"
    big = magic[2:] in (b"+\x00", b"\x00+")
    # Classic: 2-byte entry count, 12-byte entries, 4-byte offsets; BigTIFF: 8, 20 and 8.
    count_format, entry_bytes, offset_format = ("Q", 20, "Q") if big else ("H", 12, "I")
    try:
        directory = struct.unpack_from(order + offset_format, head, 8 if big else 4)[0]
    except struct.error:
        return None, False
    if not 8 <= directory < size:
        return None, False  # no directory: not a TIFF image
    try:
        n_entries = struct.unpack_from(order + count_format, head, directory)[0]
        first_entry = directory + struct.calcsize(count_format)
        next_page = struct.unpack_from(order + offset_format, head, first_entry + n_entries * entry_bytes)[0]
        values: dict[int, int] = {}
        for index in range(n_entries):
            at = first_entry + index * entry_bytes
            tag, kind = struct.unpack_from(order + "HH", head, at)
            if tag in (256, 257) and kind in (3, 4, 16):  # ImageWidth, ImageLength: SHORT, LONG or LONG8
                value_format = {3: "H", 4: "I", 16: "Q"}[kind]
                values[tag] = struct.unpack_from(order + value_format, head, at + (12 if big else 8))[0]
    except struct.error:
        return None, True  # the directory goes on beyond the head
    pixels = values[256] * values[257] if len(values) == 2 else None
    return pixels, next_page != 0

"""Decoding one image file into uint8 RGB pixels, under fidkit's colour policy.

The colour policy
-----------------
The network of the TensorFlow FID reference takes 8-bit RGB. Every image file is brought to an
``(H, W, 3)`` uint8 array the same way, whatever its mode, so that the same picture gives the same
statistics whether it is stored as a PNG, in an archive, or in an array:

* ``RGB``: used as is.
* ``L`` (grayscale) and ``1`` (1-bit): the gray value is replicated into R, G and B
  (1-bit pixels become 0 or 255).
* ``P`` / ``PA`` (palette): converted to RGB through the palette by Pillow.
* Alpha (``LA``, ``PA``, ``RGBA``, ``RGBa``, ``La``, palette transparency): dropped, **not**
  composited onto a background. The TensorFlow reference had no alpha channel; dropping it keeps the
  stored colour values, which is what a user who saved RGBA samples from a generator expects.
  Premultiplied alpha (``RGBa``, ``La``) is divided out first, by Pillow's rule
  ``min(255, floor(255 * value / alpha))``, and kept as stored where alpha is 0.
* 16-bit grayscale (``I;16`` and its byte orders) and 32-bit integer ``I`` images (how Pillow opens
  some 16-bit files): the high byte, ``x >> 8``, then replicated. Values outside 0..65535 in an ``I``
  image are an error. That is what Pillow itself keeps of 16-bit colour and 16-bit gray+alpha PNGs
  while decoding (fidkit cannot see those 16 bits), so one picture stored 16-bit with or without colour
  or alpha gives the same pixels. (Policy 1 rounded, ``round(x * 255 / 65535)``: up to one level away
  from the same picture stored with alpha.)
* ``F`` (32-bit float): refused (an :class:`~fidkit.errors.ImageError`): a float image has no
  defined range, and fidkit does not guess one.
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and any other mode Pillow can convert: converted by Pillow's
  ``convert("RGB")``. A mode that cannot be converted (or whose conversion fails in any way) makes
  that one file bad (an :class:`~fidkit.errors.ImageError` naming the file and its mode).
* EXIF orientation: the pixels are used as stored, like the reference; pass
  ``exif_transpose=True`` (``--exif-transpose``) to rotate them as a photo viewer would.
* Animated or multi-page files (GIF is not read; TIFF, WebP): the first frame.

Safety and truncation
---------------------
Images with more pixels than Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` are refused as decompression
bombs (Pillow warns between 1x and 2x that limit and raises above it; fidkit refuses both).
Raise ``PIL.Image.MAX_IMAGE_PIXELS`` in the calling process to accept bigger images; worker
processes receive the value in force when decoding starts.
A file (or archive member) larger than any image within that limit could need
(:func:`max_file_bytes`: 8 bytes per pixel, as much as 16-bit RGBA stored uncompressed, plus 16 MiB
for metadata) is refused by its size before it is read, so a sparse or padded file cannot fill
memory on its way to the decoder.
Every image is fully decoded with ``.load()`` while Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is
False, whatever the calling process set it to (many training scripts set it True): a truncated JPEG
or PNG is an error, never silently half grey. The caller's value is restored after each image, and
worker processes (which re-import the caller's script, and with it the flag) set it False for good.

Any change to the rules above must bump :data:`COLOUR_POLICY_VERSION`, which is part of every
source fingerprint and so of every cache key.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from fidkit.errors import ImageError

__all__ = [
    "COLOUR_POLICY_VERSION",
    "IMAGE_EXTENSIONS",
    "decode_image",
    "decode_image_bytes",
    "DecodedImage",
    "max_file_bytes",
    "file_too_large_error",
]

logger = logging.getLogger(__name__)

#: Version of the colour policy above; part of every fingerprint and cache key. 2: 16-bit grayscale keeps
#: its high byte, as Pillow does for 16-bit colour and gray+alpha (1 rounded it).
COLOUR_POLICY_VERSION: int = 2

#: File name extensions read as images (lower case; matching is case-insensitive).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".webp", ".tif", ".tiff"}
)

# Formats whose pixels went through lossy compression. WebP is lossy only in its "VP8 " flavour,
# which is checked on the bytes (see `_is_lossy`).
_LOSSY_FORMATS = frozenset({"JPEG", "MPO"})

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_SIXTEEN_BIT_MAX = 65535


# The most bytes per pixel of the pixel limit an image file may take: 16-bit RGBA (or CMYK) stored
# uncompressed; compressed formats take far less. Plus room for metadata (EXIF, ICC, XMP).
_FILE_BYTES_PER_PIXEL = 8
_FILE_BYTES_SLACK = 16 * 2**20


def max_file_bytes(max_pixels: int | None) -> int | None:
    """The largest file read as an image under the pixel limit `max_pixels` (None: no limit)."""
    if max_pixels is None:
        return None
    return int(max_pixels) * _FILE_BYTES_PER_PIXEL + _FILE_BYTES_SLACK


def file_too_large_error(name: str, size: int, limit: int) -> ImageError:
    """The error for a file refused unread because of its size (see :func:`max_file_bytes`)."""
    return ImageError(
        f"{name}: {size:,} bytes, more than an image within the decompression-bomb limit can take "
        f"({limit:,} bytes for PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}); refused unread: "
        "if it is a genuine image, raise PIL.Image.MAX_IMAGE_PIXELS before computing"
    )


# Pillow reads the module global ImageFile.LOAD_TRUNCATED_IMAGES while it opens and load()s an
# image: when a caller has set it True, a truncated PNG or JPEG decodes "successfully" with its
# missing rows grey. fidkit's promise (truncation is an error) must hold whatever the caller set, but
# the flag is the caller's, so it is forced False only while fidkit decodes and restored after. The
# lock guards a count of fidkit decodes in progress, so that concurrent fidkit decodes in threads
# overlap (Pillow releases the GIL) and the last one to finish restores the value saved by the first.
# A thread of the caller that decodes truncated images *while* fidkit decodes sees False meanwhile:
# a global flag cannot be both.
_strict_lock = threading.Lock()
_strict_depth = 0
_caller_load_truncated: bool = False


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Hold ``ImageFile.LOAD_TRUNCATED_IMAGES`` False for the block; restore the caller's value."""
    global _strict_depth, _caller_load_truncated
    with _strict_lock:
        if _strict_depth == 0:
            _caller_load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        _strict_depth += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _strict_lock:
            _strict_depth -= 1
            if _strict_depth == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _caller_load_truncated


@dataclass(frozen=True)
class DecodedImage:
    """Pixels of one decoded file and what was learned about it on the way.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous.
    format : str
        Pillow's name for the file format (``"PNG"``, ``"JPEG"``, ...).
    mode : str
        The image mode before conversion (``"L"``, ``"RGBA"``, ``"I;16"``, ...).
    lossy : bool
        True when the file format is lossy (JPEG, lossy WebP).
    """

    pixels: np.ndarray
    format: str
    mode: str
    lossy: bool


def _is_lossy(image_format: str | None, data: bytes) -> bool:
    if image_format in _LOSSY_FORMATS:
        return True
    if image_format == "WEBP":
        # RIFF....WEBP then the first chunk: "VP8 " (lossy), "VP8L" (lossless) or "VP8X"
        # (extended: may hold either; treat as lossy unless a VP8L chunk is present and no VP8 one).
        chunk = data[12:16]
        if chunk == b"VP8L":
            return False
        if chunk == b"VP8X":
            return b"VP8 " in data
        return True
    return False


def _sixteen_bit_to_uint8(image: Image.Image, name: str) -> np.ndarray:
    values = np.asarray(image)
    if values.size and (int(values.min()) < 0 or int(values.max()) > _SIXTEEN_BIT_MAX):
        raise ImageError(
            f"{name}: {image.mode} image with values outside 0..{_SIXTEEN_BIT_MAX} "
            f"(min {int(values.min())}, max {int(values.max())}); fidkit reads integer images as "
            "16-bit: convert it to 8-bit RGB first"
        )
    # The high byte: what Pillow keeps of the 16-bit colour and gray+alpha files it reduces while decoding.
    gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _to_rgb_array(image: Image.Image, name: str) -> np.ndarray:
    """`image` as ``(H, W, 3)`` uint8 under the colour policy; any failure is an ImageError.

    A failure here belongs to this one file (its mode, as this Pillow converts it), so whatever goes
    wrong becomes an :class:`ImageError` naming the file and its mode: ``skip_bad`` counts it, and
    without it the user learns which file to convert, not "internal error".
    """
    try:
        return _convert_mode(image, name)
    except (ImageError, MemoryError):
        # ImageError already names the file; running out of memory is not the file's fault, and
        # turning it into a skipped file would make N depend on the machine.
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises ValueError, OSError, KeyError, ...
        reason = str(exc) or type(exc).__name__
        raise ImageError(
            f"{name}: image mode {image.mode} could not be converted to RGB ({type(exc).__name__}: "
            f"{reason}); convert it to 8-bit RGB first"
        ) from exc


def _convert_mode(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        rgb = np.asarray(image, dtype=np.uint8)
    elif mode in _SIXTEEN_BIT_MODES:
        rgb = _sixteen_bit_to_uint8(image, name)
    elif mode == "F":
        raise ImageError(
            f"{name}: 32-bit float image (mode F) has no defined pixel range; convert it to 8-bit "
            "RGB (e.g. with Pillow or numpy) before computing FID"
        )
    elif mode == "PA":
        # Pillow has no direct PA->RGB route; through RGBA, then drop alpha.
        rgb = np.asarray(image.convert("RGBA"), dtype=np.uint8)[:, :, :3]
    elif mode == "La":
        # Premultiplied gray (a TIFF with associated alpha): Pillow converts "La" only to "LA",
        # dividing the alpha out as it does for RGBa -> RGB; from there the LA rule (drop alpha).
        gray = np.asarray(image.convert("LA"), dtype=np.uint8)[:, :, 0]
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        # L and 1 replicate; LA, RGBA, RGBX drop the extra band; P maps through the palette;
        # CMYK, YCbCr, LAB, HSV use Pillow's conversions. Palette transparency is ignored by
        # design (alpha is dropped), so Pillow's warning about it is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Palette images with Transparency")
            try:
                converted = image.convert("RGB")
            except (ValueError, OSError) as exc:
                raise ImageError(
                    f"{name}: image mode {mode} cannot be converted to RGB ({exc}); convert it to "
                    "8-bit RGB first"
                ) from exc
        rgb = np.asarray(converted, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"{name}: decoded to shape {rgb.shape}, expected (H, W, 3)")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def decode_image_bytes(
    data: bytes, name: str, *, exif_transpose: bool = False, max_pixels: int | None = None
) -> DecodedImage:
    """Decode one image file's bytes under the colour policy, keeping format details.

    Parameters
    ----------
    data : bytes
        The whole file.
    name : str
        Where it came from, for error messages (a relative path or archive member).
    exif_transpose : bool, default False
        Apply the EXIF orientation tag.
    max_pixels : int or None
        Decompression-bomb limit; None uses ``PIL.Image.MAX_IMAGE_PIXELS`` as it is now.

    Returns
    -------
    DecodedImage

    Raises
    ------
    ImageError
        The bytes are not an image, the image is truncated or corrupt, too large, or of a mode the
        policy refuses. The message starts with `name`.
    MemoryError
        Memory ran out while decoding: no fault of the file, so never an ImageError (a counted skip
        would make the number of images depend on the machine).
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    # Strict whatever the caller set: see _strict_truncation.
    with _strict_truncation():
        try:
            with warnings.catch_warnings():
                # Pillow only warns between 1x and 2x its limit; fidkit refuses both.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                width, height = image.size
                if limit is not None and width * height > limit:
                    raise Image.DecompressionBombError(
                        f"{width * height} pixels exceeds the limit of {limit}"
                    )
                # .load() decodes everything now, so truncation shows up here rather than later.
                image.load()
                original_mode = image.mode
                image_format = image.format or "unknown"
                if exif_transpose:
                    image = ImageOps.exif_transpose(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"{name}: refused as a possible decompression bomb ({exc}); if the image is genuine, "
                "raise PIL.Image.MAX_IMAGE_PIXELS before computing"
            ) from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError(f"{name}: not an image Pillow can read") from exc
        except MemoryError:
            # Not the file's fault (see _to_rgb_array): the caller stops the run rather than count a bad file.
            raise
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, EOFError
            reason = str(exc) or type(exc).__name__
            raise ImageError(f"{name}: cannot decode ({type(exc).__name__}: {reason})") from exc
        pixels = _to_rgb_array(image, name)
    return DecodedImage(
        pixels=pixels,
        format=image_format,
        mode=original_mode,
        lossy=_is_lossy(image_format, data),
    )


def decode_image(data: bytes, name: str, *, exif_transpose: bool = False) -> np.ndarray:
    """Decode one image file's bytes into ``(H, W, 3)`` uint8 RGB under the colour policy.

    Parameters
    ----------
    data : bytes
        The whole file (PNG, JPEG, BMP, WebP, TIFF, or anything else Pillow reads).
    name : str
        Where it came from, for error messages.
    exif_transpose : bool, default False
        Rotate/flip according to the EXIF orientation tag; by default pixels are used as stored.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous.

    Raises
    ------
    ImageError
        Not an image, truncated, corrupt, a decompression bomb, or a float image; the message
        names `name` and the reason.

    Examples
    --------
    >>> pixels = decode_image(Path("cat.png").read_bytes(), "cat.png")  # doctest: +SKIP
    >>> pixels.shape, pixels.dtype  # doctest: +SKIP
    ((375, 500, 3), dtype('uint8'))
    """
    return decode_image_bytes(data, name, exif_transpose=exif_transpose).pixels

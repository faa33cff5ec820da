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
False, whatever the calling process set it to (many training scripts set it True): a file cut short is
an error. The caller's value is restored after each image, and worker processes (which re-import the
caller's script, and with it the flag) set it False for good.
Some cut files are complete to the decoder, and are checked after decoding (a bad file, like any
truncated one):

* A PNG whose compressed image data ends early (its zlib stream complete and its CRCs valid, but short):
  Pillow stops at the end of the stream and leaves the rest black. The data is inflated again and its
  length compared with what the header implies (width, height, bit depth, colour type, and the seven
  Adam7 passes of an interlaced file); exact.
* A JPEG cut inside its image data and closed with an end-of-image marker (``FF D9``): libjpeg fills
  the rest grey (a sequential file) or leaves it unrefined (a progressive one). The file is decoded a
  second time with filler bytes before that marker, which libjpeg skips in a complete file, and a file
  whose pixels then differ is cut. Only a file ending in ``FF D9`` is probed: a progressive (or other
  multi-scan) file and a sequential one of at most 256x256 pixels always, which costs a second decode;
  a larger sequential one only when its last pixel (bottom-right) is mid grey in every band, as the fill
  leaves it. Not detected: a progressive JPEG cut exactly between two whole scans, a valid file with
  fewer scans (coarser pixels); a sequential JPEG larger than 256x256 cut inside the blocks that hold
  its last pixel (their pixels are garbage, not grey); a cut file with bytes after its end marker; an
  arithmetic-coded JPEG (its decoder reads ahead, so the filler changes a complete file's pixels too:
  not probed); and rarely (1 of 773 cuts of CIFAR-10 JPEGs) a cut a few bytes before the end that the
  filler decodes to the same pixels as the missing bytes. FF fill bytes before the end marker (allowed
  by the standard) stay before it: the filler goes ahead of them.

Any change to the rules above must bump :data:`COLOUR_POLICY_VERSION`, which is part of every
source fingerprint and so of every cache key.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
import threading
import warnings
import zlib
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
#: its high byte, as Pillow does for 16-bit colour and gray+alpha (1 rounded it). 3: a PNG whose image data
#: ends early and a JPEG cut and closed with an end marker are bad files (2 read them, half black or grey):
#: the same files give another set of images, so statistics cached from them are not served again.
COLOUR_POLICY_VERSION: int = 3

#: File name extensions read as images (lower case; matching is case-insensitive).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".webp", ".tif", ".tiff"}
)

# Formats whose pixels went through lossy compression. WebP is lossy only in its "VP8 " flavour,
# which is checked on the bytes (see `_is_lossy`).
_LOSSY_FORMATS = frozenset({"JPEG", "MPO"})

# TIFF compressions (Pillow's names, im.info["compression"]) that lose information: JPEG in its old and new forms,
# and WebP, lossy unless the writer asked libtiff for its lossless mode (which the file does not record).
_LOSSY_TIFF_COMPRESSIONS = frozenset({"jpeg", "tiff_jpeg", "webp"})

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


# --- files cut short that decode without an error (see "Safety and truncation" above) ---------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel of each PNG colour type: gray, RGB, palette index, gray + alpha, RGB + alpha.
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7, the PNG interlace: each pass's (first column, first row, column step, row step).
_ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# Compressed bytes fed to zlib at a time, and the most inflated bytes it returns at a time: counting the
# inflated length of an image keeps no more than this of it.
_INFLATE_IN_BYTES = 64 * 1024
_INFLATE_OUT_BYTES = 4 * 2**20


def _png_filtered_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlace: int) -> int | None:
    """Bytes the zlib stream of a PNG with this IHDR inflates to (a filter byte per row, then the packed samples);
    None for a colour type PNG does not define (Pillow would not have decoded it)."""
    samples = _PNG_SAMPLES.get(colour_type)
    if samples is None:
        return None
    bits_per_pixel = samples * bit_depth

    def image_bytes(columns: int, rows: int) -> int:
        # A pass without pixels has no rows at all, not even filter bytes.
        return 0 if columns <= 0 or rows <= 0 else rows * (1 + (columns * bits_per_pixel + 7) // 8)

    if interlace == 0:
        return image_bytes(width, height)
    return sum(
        image_bytes(-(-(width - column) // column_step), -(-(height - row) // row_step))
        for column, row, column_step, row_step in _ADAM7_PASSES
    )


def _png_image_data_lengths(data: bytes) -> tuple[int, int] | None:
    """``(bytes the image data inflates to, bytes the header implies)`` of a PNG, the first counted only as far as
    it matters (up to the second); None when the chunks cannot be followed (the decoder judged those)."""
    position = len(_PNG_SIGNATURE)
    view = memoryview(data)
    expected: int | None = None
    inflater = zlib.decompressobj()
    inflated = 0
    in_image_data = False
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        body = view[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR" and len(body) >= 13:
            width, height, bit_depth, colour_type, _, _, interlace = struct.unpack_from(">IIBBBBB", body)
            expected = _png_filtered_bytes(width, height, bit_depth, colour_type, interlace)
        elif kind == b"IDAT":
            in_image_data = True
            for start in range(0, len(body), _INFLATE_IN_BYTES):
                pending = bytes(body[start : start + _INFLATE_IN_BYTES])
                try:
                    while pending and not inflater.eof:
                        inflated += len(inflater.decompress(pending, _INFLATE_OUT_BYTES))
                        pending = inflater.unconsumed_tail
                except zlib.error:
                    # Damage past what the decoder needed (it decoded the image): what inflated so far counts.
                    return None if expected is None else (inflated, expected)
                if inflater.eof or (expected is not None and inflated >= expected):
                    return None if expected is None else (inflated, expected)
        elif in_image_data:
            break  # the image data is consecutive IDAT chunks: it ended here
    return None if expected is None else (inflated, expected)


def _png_cut_short(data: bytes, name: str) -> ImageError | None:
    """The error for a PNG whose image data inflates to fewer bytes than its header implies, else None.

    Pillow's decoder stops at the end of the zlib stream and keeps the rows it has: a stream closed early
    (complete, with valid checksums) decodes "successfully" with the missing rows black.
    """
    lengths = _png_image_data_lengths(data)
    if lengths is None or lengths[0] >= lengths[1]:
        return None
    inflated, expected = lengths
    return ImageError(
        f"{name}: cannot decode (image file is truncated: its PNG image data inflates to {inflated:,} of the "
        f"{expected:,} bytes its header implies, so the rest of its pixels are missing); copy or export the file again"
    )


_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
# Bytes put before the final end-of-image marker to probe a JPEG: libjpeg skips extraneous bytes before a marker
# in a complete file, and decodes them as image data in a file cut inside its image data.
_JPEG_PROBE_FILLER = b"\x55" * 64
# Pixel bytes of the two decodes of a JPEG compared at a time.
_COMPARED_BYTES = 4 * 2**20
# What libjpeg leaves in every band of the blocks after a cut: a zero DCT, level-shifted to mid grey (128; 127 in
# an Adobe CMYK file, stored inverted).
_JPEG_FILL_VALUES = frozenset({127, 128})
# Sequential JPEGs of at most this many pixels are always probed. A cut inside the last MCU (the blocks holding
# the bottom-right pixel) leaves that pixel garbage, not grey: a quarter of the cuts of a 32x32 image with 4:2:0
# chroma (4 MCUs), about one in 256 of an image just above this size. Probing one this small: about 2 ms at most.
_JPEG_ALWAYS_PROBE_PIXELS = 256 * 256


# Start-of-frame markers of arithmetic coding (SOF9-SOF11, SOF13-SOF15).
_JPEG_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_scans(data: bytes) -> tuple[int | None, int | None]:
    """The start-of-frame marker of a JPEG and its start-of-scan markers after the first one (none for a sequential
    file of one scan); None for either when its marker segments cannot be followed to a first scan.

    The segments before the first scan are walked (an EXIF thumbnail inside APP1, with its own scan, is skipped
    whole); after it, FF DA can only be a marker, as image data stuffs every FF byte.
    """
    position, frame = 2, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return frame, None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            position += 2
        elif marker == 0xDA:
            return frame, data.count(_JPEG_SOS, position + 2)
        else:
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # not DHT, JPG, DAC
                frame = marker
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return frame, None


def _same_pixels(first: Image.Image, second: Image.Image) -> bool:
    """Whether two decoded images are equal, compared a strip of rows at a time: no whole copy of either."""
    if first.mode != second.mode or first.size != second.size:
        return False
    rows = max(1, _COMPARED_BYTES // max(1, first.width * len(first.getbands())))
    if rows >= first.height:
        return first.tobytes() == second.tobytes()
    for top in range(0, first.height, rows):
        box = (0, top, first.width, min(first.height, top + rows))
        if first.crop(box).tobytes() != second.crop(box).tobytes():
            return False
    return True


def _jpeg_cut_short(image: Image.Image, data: bytes, name: str) -> ImageError | None:
    """The error for a JPEG cut inside its image data and closed with an end-of-image marker, else None.

    `image` is `data` decoded. libjpeg decodes such a file without an error: the blocks after the cut are
    grey (:data:`_JPEG_FILL_VALUES`) in a sequential file, left at the scans they had in a progressive one.
    The probe decodes the file again with :data:`_JPEG_PROBE_FILLER` before its final marker: a complete
    file gives the same pixels, a cut one other pixels (the filler read as image data) or an error. A
    sequential file of one scan larger than :data:`_JPEG_ALWAYS_PROBE_PIXELS` is probed only when its
    bottom-right pixel, decoded last, is the fill value in every band.
    """
    if not data.endswith(_JPEG_EOI):
        return None  # a file cut without a marker: Pillow reports it as truncated
    frame, later_scans = _jpeg_scans(data)
    if frame in _JPEG_ARITHMETIC_FRAMES:
        # The arithmetic decoder reads bytes ahead of its last decisions and zeros at a marker: the filler changes
        # the pixels of a complete file too, so the probe cannot tell. Not detected (docs/usage.md).
        return None
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    sequential = not progressive and later_scans == 0
    if sequential and image.width * image.height > _JPEG_ALWAYS_PROBE_PIXELS:
        corner = image.getpixel((image.width - 1, image.height - 1))
        if any(band not in _JPEG_FILL_VALUES for band in (corner if isinstance(corner, tuple) else (corner,))):
            return None
    try:
        # FF fill bytes may precede the end marker (T.81 B.1.1.2): the filler goes before them, or libjpeg would
        # read FF 55 as an unknown marker. Image data never ends in FF (it stuffs every FF byte with 00).
        body = data[:-2].rstrip(b"\xff")
        with Image.open(io.BytesIO(body + _JPEG_PROBE_FILLER + _JPEG_EOI), formats=["JPEG"]) as probe:
            probe.load()
            same = _same_pixels(probe, image)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - the filler read as image data can break it in any way: it was image data
        same = False
    if same:
        return None
    return ImageError(
        f"{name}: cannot decode (image file is truncated: its JPEG image data was cut and closed with an "
        "end-of-image marker, so the decoder would leave the rest grey or unrefined); copy or export the file again"
    )


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
        True when the pixels went through lossy compression (JPEG, lossy WebP, a JPEG- or WebP-compressed
        TIFF).
    """

    pixels: np.ndarray
    format: str
    mode: str
    lossy: bool


def _is_lossy(image_format: str | None, data: bytes, compression: object = None) -> bool:
    """Whether the pixels went through lossy compression; `compression` is Pillow's ``info["compression"]``."""
    if image_format in _LOSSY_FORMATS:
        return True
    if image_format == "TIFF":
        # A TIFF is a container: its pixels may be JPEG-compressed (a scanner's or a camera's usual choice).
        return compression in _LOSSY_TIFF_COMPRESSIONS
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
                compression = image.info.get("compression")
                # Some cut files decode without an error (see "Safety and truncation"): checked on the
                # pixels as stored, before any rotation.
                if image_format == "PNG":
                    cut = _png_cut_short(data, name)
                elif image_format == "JPEG":
                    cut = _jpeg_cut_short(image, data, name)
                else:
                    cut = None
                if exif_transpose and cut is None:
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
        if cut is not None:
            raise cut
        pixels = _to_rgb_array(image, name)
    return DecodedImage(
        pixels=pixels,
        format=image_format,
        mode=original_mode,
        lossy=_is_lossy(image_format, data, compression),
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

"""Decoding and resizing of images without torch: shared by the library and the torch-free runtime.

Everything that decides what a model sees lives here, once: how a file, raw bytes or a camera array become
RGB ``uint8`` ``(H, W, 3)``, and how that is resized to the model's input size. ``data/preprocessing.py`` (the
library) and ``anomalens.inference`` (the runtime of exported bundles) both call these functions, so an
exported model sees exactly the pixels its checkpoint saw.

>>> rgb = read_rgb("part_17.png")                      # doctest: +SKIP
>>> resize_rgb_array(rgb, (256, 256)).shape            # doctest: +SKIP
(256, 256, 3)
"""

from __future__ import annotations

import contextlib
import io
import stat
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anomalens.errors import DataError
from anomalens.limits import check_image_pixels

# Pillow warns (then errors at twice the size) about images over its own pixel limit; a warning line before our
# one-line error would be noise, so it is an error here. Set once at import: catch_warnings() per call is not
# thread-safe, and images are decoded in a background thread (Preprocessing.iter_images).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _pillow_formats(extensions: tuple[str, ...]) -> tuple[str, ...]:
    registered = Image.registered_extensions()  # loads Pillow's plugins once: ".jpg" -> "JPEG"
    return tuple(dict.fromkeys(registered[ext] for ext in extensions if ext in registered))


# The Pillow plugins a file or an upload is decoded with: those of IMAGE_EXTENSIONS and no other. Left to itself
# Pillow tries every plugin it has on any bytes, whatever the file's name: an uploaded EPS ran Ghostscript inside
# the server, and rarely used decoders (BLP, ICNS, SPIDER, ...) are where damaged data finds crashes.
IMAGE_FORMATS = _pillow_formats(IMAGE_EXTENSIONS)
_ACCEPTED = ", ".join(IMAGE_FORMATS)
# 16-bit, 32-bit integer and float images: scaled to 8 bits by _high_bit_to_uint8
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# How images are resized to the model's input (written into exported bundles so that other tools can check)
RESIZE_METHOD = "PIL.Image.resize BILINEAR (Pillow antialiases when shrinking); skipped when the size already matches"

ImageSource = Union[str, Path, bytes, bytearray, memoryview, np.ndarray]


@contextlib.contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """The one place an image file is opened (images, masks, video frames): checked before pixels are decoded.

    The header's size is held to :data:`~anomalens.limits.MAX_IMAGE_PIXELS` before any pixel is decoded,
    Pillow's decompression-bomb guard becomes the same error, and every failure of the file or the decoder
    is a :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block or never end
            raise DataError(f"not a regular file, so not {_a(what)}", path)
        if path.stat().st_size == 0:
            raise DataError(f"empty file (0 bytes), not {_a(what)}", path)
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            check_image_pixels(img.width, img.height, path)
            yield img  # the caller loads and converts the pixels here: its decoding errors are handled below too
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} file not found", path) from None
    except PermissionError:
        raise DataError("permission denied: cannot read this file", path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"refused as a decompression bomb ({exc})", path) from None
    except UnidentifiedImageError:
        raise DataError(f"not {_a(what)} anomalens reads (corrupt or unknown format; accepted: {_ACCEPTED})", path) from None
    except Exception as exc:  # noqa: BLE001  Pillow's decoders raise many types on damaged data (IndexError,
        # struct.error, each plugin's own errors), MemoryError included as before: each is this file's fault
        raise DataError(f"cannot decode {what} ({_first_line(exc)})", path) from None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def read_rgb(path: str | Path) -> np.ndarray:
    """Read any image Pillow understands as an RGB ``uint8`` array ``(H, W, 3)`` at its native size."""
    with open_image(path) as img:
        img.load()
        return _to_rgb_array(img, path)


def image_size_of(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(height, width) from the header alone, as :func:`read_rgb` returns it (turned upright by the EXIF
    orientation), with the same checks."""
    with open_image(path, what) as img:
        return _upright_size(img)


def decode_rgb(data: bytes | bytearray | memoryview, name: str = "image") -> np.ndarray:
    """Encoded image bytes (an upload, a request body) -> RGB ``uint8`` ``(H, W, 3)``, as :func:`read_rgb`."""
    with _opened_upload(data, name) as img:
        img.load()
        return _to_rgb_array(img, name)


def encoded_image_size(data: bytes | bytearray | memoryview, name: str = "image") -> tuple[int, int]:
    """(height, width) of encoded image bytes from the header alone, with :func:`decode_rgb`'s checks and errors:
    what decoding them will hold in memory is known before it starts (the server's decode budget)."""
    with _opened_upload(data, name) as img:
        return _upright_size(img)


@contextlib.contextmanager
def _opened_upload(data: bytes | bytearray | memoryview, name: str) -> Iterator[Image.Image]:
    """Encoded bytes opened by an accepted plugin, size checked; every failure of the bytes is a DataError naming
    ``name`` (an upload must never give a server error)."""
    if len(data) == 0:
        raise DataError(f"{name}: empty (0 bytes), not an image")
    try:
        with Image.open(io.BytesIO(bytes(data)), formats=IMAGE_FORMATS) as img:
            check_image_pixels(img.width, img.height, name)
            yield img  # the caller decodes here: its errors are the bytes' too
    except DataError:
        raise
    except MemoryError:  # the machine's state, not the upload's fault: not a 400 (as before)
        raise
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image anomalens reads (corrupt or unknown format; accepted: {_ACCEPTED})") from None
    except Exception as exc:  # noqa: BLE001  any decoder failure on damaged bytes (IndexError, struct.error, a
        # plugin's own error type, the decompression-bomb guard): the upload's fault, a 400 naming it, never a 500
        raise DataError(f"{name}: cannot decode image ({_first_line(exc)})") from None


ARRAY_DTYPES = ("uint8", "uint16", "bool")


def rgb_array(array: np.ndarray) -> np.ndarray:
    """An image array already in memory (a camera frame, an upload) -> RGB ``uint8`` ``(H, W, 3)``.

    Grey ``(H, W)`` is repeated to three channels; a fourth (alpha) channel is dropped. ``uint8`` is taken as
    is, ``uint16`` (a Mono16 camera frame) is scaled from 0-65535 to 0-255 exactly as a 16-bit file is, ``bool``
    becomes 0 and 255. Any other dtype is a DataError saying what to pass: a float frame may hold [0, 1] or
    [0, 255] and a cast would guess (28004 as uint16 once became 100 by wrapping around).
    """
    array = np.asarray(array)
    if array.dtype.name not in ARRAY_DTYPES:
        raise DataError(f"image arrays must be uint8 (0-255), uint16 (0-65535, scaled to 8 bits as 16-bit files are) "
                        f"or bool, got {array.dtype}: convert first, e.g. (frame * 255).round().astype(np.uint8) "
                        "for floats in [0, 1]")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, :3]
    elif array.ndim != 2:
        raise DataError(f"expected an RGB image array of shape (H, W, 3), got {tuple(array.shape)}")
    check_image_pixels(array.shape[1], array.shape[0])  # before any copy of it is made
    if array.dtype == np.uint16:
        array = _scaled_to_uint8(array, 65535.0)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def load_rgb(source: ImageSource, name: str | None = None) -> np.ndarray:
    """A path, encoded bytes or an array -> RGB ``uint8`` ``(H, W, 3)`` at its native size."""
    if isinstance(source, np.ndarray):
        return rgb_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_rgb(source, name or "image")
    return read_rgb(source)


def resize_rgb_array(array: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """RGB ``uint8`` ``(H, W, 3)`` -> ``(h, w, 3)`` with ``size = (h, w)`` (see :data:`RESIZE_METHOD`)."""
    if size is not None and (array.shape[0], array.shape[1]) != tuple(size):
        img = Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array


def prepare_rgb(source: ImageSource, size: tuple[int, int], name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """One image -> (RGB ``uint8`` at the model's ``size``, the image's own ``(height, width)``): the size that
    defect regions are given in (``anomalens.metrics.regions``)."""
    image = load_rgb(source, name)
    return resize_rgb_array(image, size), (int(image.shape[0]), int(image.shape[1]))


# EXIF orientations (TIFF tag 274) that swap width and height: 5-8 are the transposes and quarter turns
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation a phone or camera wrote (1 = stored upright), from the header."""
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixels: that would
        # decode every PNG before the server's decode gate admits it (and twice). A chunk before them is in info.
        return 1
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001  a damaged EXIF block is no reason to refuse the pixels
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """(height, width) as the image is shown: viewers turn it by its EXIF orientation, so masks are drawn, and
    regions are read, that way up."""
    return (img.width, img.height) if _orientation(img) in _SWAPPED_ORIENTATIONS else (img.height, img.width)


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned the way viewers show it (its EXIF orientation); the image itself when stored upright. A
    photo stored sideways is scored, and its regions given, the way it is shown and its mask was drawn."""
    return ImageOps.exif_transpose(img) if _orientation(img) != 1 else img


def _to_rgb_array(img: Image.Image, source: str | Path | None = None) -> np.ndarray:
    img = upright(img)
    if img.mode in HIGH_BIT_MODES:
        grey = _high_bit_to_uint8(np.asarray(img), img.mode, source)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black so that transparent areas look the same in every image
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


# The range a 32-bit integer image (mode I) is read in when its values exceed 16 bits: all that the mode holds
INT32_TOP = 2**31 - 1


def _high_bit_to_uint8(values: np.ndarray, mode: str, source: str | Path | None) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey image -> ``uint8``, scaling the range the values are in, never clipping.

    16-bit (``I;16``): 0-65535. 32-bit integers (``I``) and floats (``F``): the smallest of these ranges that holds
    the image's largest value: [0, 1] (floats only), 0-255, 0-65535, and for integers 0-2147483647 (all the mode
    holds). Refused with a DataError naming the file: NaN or infinite values, negative values (no range of pixel
    intensities has them), and floats above 65535: each used to become black or grey silently.
    """
    if mode.startswith("I;16"):
        return _scaled_to_uint8(values, 65535.0)
    if mode == "F" and not np.isfinite(values).all():
        raise DataError(f"float image holds NaN or infinite values ({int((~np.isfinite(values)).sum())} pixels): "
                        "not pixel intensities", source)
    low, peak = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    kind = "float" if mode == "F" else "32-bit integer"
    if low < 0:
        raise DataError(f"{kind} image holds negative values (lowest {low:g}): pixel intensities run from 0", source)
    tops = (1.0, 255.0, 65535.0) if mode == "F" else (255.0, 65535.0, float(INT32_TOP))
    top = next((t for t in tops if peak <= t), None)
    if top is None:
        raise DataError(f"float image holds values up to {peak:g}: float images are read in [0, 1], 0-255 or "
                        "0-65535; convert it to 8 or 16 bits", source)
    return _scaled_to_uint8(values, top)


def _scaled_to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    """0..``top`` -> 0..255, rounded. Integers up to 16 bits go through float32: every one of the 65536 values
    comes out as through float64 (checked by a test), at half the memory of an 8192x8192 frame."""
    small_integers = values.dtype.kind in "ui" and top <= 65535.0
    scaled = values.astype(np.float32 if small_integers else np.float64)
    scaled /= top
    scaled *= 255.0
    scaled += 0.5
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)

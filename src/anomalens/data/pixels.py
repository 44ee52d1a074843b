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
from PIL import Image, UnidentifiedImageError

from anomalens.errors import DataError
from anomalens.limits import check_image_pixels

# Pillow warns (then errors at twice the size) about images over its own pixel limit; a warning line before our
# one-line error would be noise, so it is an error here. Set once at import: catch_warnings() per call is not
# thread-safe, and images are decoded in a background thread (Preprocessing.iter_images).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
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
        with Image.open(path) as img:
            check_image_pixels(img.width, img.height, path)
            yield img
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} file not found", path) from None
    except PermissionError:
        raise DataError("permission denied: cannot read this file", path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"refused as a decompression bomb ({exc})", path) from None
    except UnidentifiedImageError:
        raise DataError(f"not {_a(what)} Pillow can read (corrupt or unknown format)", path) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
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
        return _to_rgb_array(img)


def image_size_of(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(height, width) from the header alone, with the same checks as :func:`read_rgb`."""
    with open_image(path, what) as img:
        return (img.height, img.width)


def decode_rgb(data: bytes | bytearray | memoryview, name: str = "image") -> np.ndarray:
    """Encoded image bytes (an upload, a request body) -> RGB ``uint8`` ``(H, W, 3)``, as :func:`read_rgb`."""
    if len(data) == 0:
        raise DataError(f"{name}: empty (0 bytes), not an image")
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            check_image_pixels(img.width, img.height, name)
            img.load()
            return _to_rgb_array(img)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image Pillow can read (corrupt or unknown format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: cannot decode image ({exc})") from None


def rgb_array(array: np.ndarray) -> np.ndarray:
    """An image array already in memory (a camera frame, an upload) -> RGB ``uint8`` ``(H, W, 3)``.

    Grey ``(H, W)`` is repeated to three channels; a fourth (alpha) channel is dropped.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise DataError(f"expected an RGB image array of shape (H, W, 3), got {tuple(array.shape)}")
    check_image_pixels(array.shape[1], array.shape[0])
    return np.ascontiguousarray(array[:, :, :3]).astype(np.uint8, copy=False)


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


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit or float: scale the full range of the type down to 8 bits, not by clipping
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            top = max(float(arr.max()), 1.0) if arr.max() > 1.0 else 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black so that transparent areas look the same in every image
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()

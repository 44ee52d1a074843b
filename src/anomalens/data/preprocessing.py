"""The one place where pixels become tensors: training, evaluation, the CLI and the UI all come here.

Images of any mode Pillow reads (8/16-bit, grayscale, RGBA, palette) become RGB ``uint8`` tensors of
shape ``(3, H, W)``; detectors turn them into floats in [0, 1] batch by batch (:func:`to_float`).
Masks become ``bool`` tensors ``(H, W)``.

>>> prep = Preprocessing(image_size=(256, 256))
>>> prep.load_image("bottle/test/broken_large/000.png").shape  # doctest: +SKIP
torch.Size([3, 256, 256])
"""

from __future__ import annotations

import contextlib
import queue
import stat
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from anomalens.errors import ConfigError, DataError
from anomalens.limits import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, check_image_pixels

# Pillow warns (then errors at twice the size) about images over its own pixel limit; a warning line before our
# one-line error would be noise, so it is an error here. Set once at import: catch_warnings() per call is not
# thread-safe, and images are decoded in a background thread (Preprocessing.iter_images).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def parse_image_size(value: int | Sequence[int]) -> tuple[int, int]:
    """``256`` or ``[256]`` -> ``(256, 256)``; ``[H, W]`` -> ``(H, W)``; rejects what no model can take."""
    if isinstance(value, int):
        size = (value, value)
    else:
        try:
            values = [int(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"image_size takes one or two whole numbers (H W), got {value!r}") from None
        if len(values) == 1:
            size = (values[0], values[0])
        elif len(values) == 2:
            size = (values[0], values[1])
        else:
            raise ConfigError(f"image_size takes one or two numbers (H W), got {len(values)}")
    if min(size) < MIN_IMAGE_SIDE or max(size) > MAX_IMAGE_SIDE:
        raise ConfigError(f"image_size {size[0]} {size[1]} is out of range: each side must be "
                          f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} pixels")
    return size


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


def resize_rgb(array: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """RGB ``uint8`` ``(H, W, 3)`` -> ``uint8`` tensor ``(3, h, w)``, bilinear with antialiasing."""
    if size is not None and (array.shape[0], array.shape[1]) != tuple(size):
        img = Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(N, 3, H, W)`` -> ``float32`` in [0, 1] (floats pass through)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


@dataclass(frozen=True)
class Preprocessing:
    """How every image is prepared; saved with each model so that scoring matches training.

    ``image_size`` is (height, width); ``None`` keeps the native size (used when tiling).
    """

    image_size: tuple[int, int] | None

    def load_image(self, path: str | Path) -> torch.Tensor:
        return resize_rgb(read_rgb(path), self.image_size)

    def load_images(self, paths: Sequence[str | Path], reporter: Any = None) -> torch.Tensor:
        """Decode and resize each image once into one ``uint8`` tensor ``(N, 3, H, W)``."""
        if self.image_size is None:
            raise ConfigError("images of native size cannot be stacked; load them one by one")
        iterator: Iterable = paths if reporter is None else reporter.iter(paths, "decode images")
        if not paths:
            return torch.empty((0, 3, *self.image_size), dtype=torch.uint8)
        return torch.stack([self.load_image(p) for p in iterator])

    def iter_images(self, paths: Sequence[str | Path], batch_size: int, prefetch: int = 2) -> Iterator[torch.Tensor]:
        """Batches ``(B, 3, H, W)`` of decoded images, decoded in a background thread while the caller computes
        on the previous batch (PIL releases the GIL while decoding). Errors surface in the caller's thread."""
        if self.image_size is None:
            raise ConfigError("images of native size cannot be stacked; load them one by one")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        ready: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()

        def decode() -> None:
            try:
                for start in range(0, len(paths), batch_size):
                    if stop.is_set():
                        return
                    ready.put(torch.stack([self.load_image(p) for p in paths[start : start + batch_size]]))
                ready.put(None)
            except BaseException as exc:  # handed to the consumer, which raises it
                ready.put(exc)

        thread = threading.Thread(target=decode, name="anomalens-decode", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass

    def prepare_array(self, array: np.ndarray) -> torch.Tensor:
        """An RGB ``uint8`` array already in memory (an upload, a video frame) -> ``(3, H, W)`` tensor."""
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise DataError(f"expected an RGB image array of shape (H, W, 3), got {tuple(array.shape)}")
        check_image_pixels(array.shape[1], array.shape[0])
        return resize_rgb(np.ascontiguousarray(array[:, :, :3]).astype(np.uint8, copy=False), self.image_size)

    def load_mask(self, path: str | Path, image_path: str | Path | None = None) -> torch.Tensor:
        """A ground-truth mask -> ``bool`` ``(H, W)``; its native size must match its image's."""
        path = Path(path)
        with open_image(path, "mask") as img:
            img.load()
            mask = np.asarray(img.convert("L")) > 127
        if image_path is not None:
            native = image_size_of(image_path)
            if mask.shape != native:
                raise DataError(
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {Path(image_path).name} is "
                    f"{native[1]}x{native[0]}",
                    path,
                )
        if self.image_size is not None and mask.shape != tuple(self.image_size):
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (self.image_size[1], self.image_size[0]), Image.BILINEAR
            )
            mask = np.asarray(resized) > 127
        return torch.from_numpy(mask.copy())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        size = data.get("image_size")
        return cls(image_size=tuple(size) if size is not None else None)  # type: ignore[arg-type]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )

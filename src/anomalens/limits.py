"""The limits every input is held to, in one place: the CLI, the checkpoint schema, the decoders and the UI read them.

A flag, a saved ``config.json``, a decoded image, a video frame and an uploaded zip are all checked against
these numbers, so a value the CLI refuses cannot come back in through a tampered checkpoint or an upload.
They are generous for real work (an 8k x 8k inspection image, a 4096-pixel model input) and small enough
that no single input can make the process allocate tens of gigabytes before it is refused.

>>> MIN_IMAGE_SIDE, MAX_IMAGE_SIDE
(32, 4096)
>>> check_image_pixels(50_000, 50_000, "bomb.png")   # doctest: +SKIP
Traceback (most recent call last):
DataError: bomb.png: image is 50000x50000 pixels (2500.0 megapixels); at most 67.1 megapixels are accepted (8192x8192)
"""

from __future__ import annotations

import math
from pathlib import Path

from anomalens.errors import DataError

# model input size (--image-size, image_size in config.json / run.json): each side
MIN_IMAGE_SIDE = 32
MAX_IMAGE_SIDE = 4096
# decoded images and video frames at their native size (8192 x 8192 = 67.1 megapixels = 201 MB as RGB)
MAX_IMAGE_PIXELS = 8192 * 8192
# frames per second a user may give for a clip, and a model may save as its training footage's rate
MAX_FPS = 1000.0
# items per batch (images, frames or windows)
MAX_BATCH_SIZE = 4096
# training epochs
MAX_EPOCHS = 100_000
# channels of any learned layer (latent, hidden, projection)
MAX_CHANNELS = 4096
# entries of any memory (appearance memory, motion memory, samples drawn)
MAX_MEMORY_ENTRIES = 10_000_000
# frames of a window or stride in a video model
MAX_SEQUENCE_LENGTH = 1024
# uploads: zip members and unpacked bytes
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_UNPACKED_BYTES = 4 * 1024**3
# unpacked / packed size of a member above MIN_RATIO_CHECK_BYTES: image files are already compressed
MAX_ZIP_RATIO = 50
MIN_RATIO_CHECK_BYTES = 64 * 1024
# the web UI's per-session output folders, all sessions together (the oldest go first)
MAX_UI_SESSIONS_BYTES = 2 * 1024**3
# free space a training run wants before it starts (a model folder is tens of MB; this leaves margin)
MIN_FREE_BYTES_FOR_RUN = 256 * 1024**2
# config.json / run.json of a checkpoint (run.json lists the validation files: generous)
MAX_CHECKPOINT_JSON_BYTES = 64 * 1024**2
# file and folder names (most file systems stop at 255 bytes per name)
MAX_NAME_BYTES = 255


def is_frame_rate(fps: object) -> bool:
    """Whether ``fps`` is a usable frame rate: a finite number in (0, :data:`MAX_FPS`] (not a bool)."""
    return isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and 0.0 < fps <= MAX_FPS


def check_image_pixels(width: int, height: int, source: str | Path | None = None) -> None:
    """Refuse an image or frame whose native size is over :data:`MAX_IMAGE_PIXELS` (before it is decoded)."""
    pixels = int(width) * int(height)
    if width < 1 or height < 1:
        raise DataError(f"image has an empty size ({width}x{height})", source)
    if pixels > MAX_IMAGE_PIXELS:
        raise DataError(
            f"image is {width}x{height} pixels ({pixels / 1e6:.1f} megapixels); at most "
            f"{MAX_IMAGE_PIXELS / 1e6:.1f} megapixels are accepted (8192x8192)",
            source,
        )

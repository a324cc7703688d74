"""Image decoding for the CLIP encoders: CLIP's preprocessing, run in parallel worker processes.

``decode_image`` reproduces the CLIP pipeline (OpenAI ``clip`` and Hugging Face ``CLIPImageProcessor``
alike): convert to RGB, resize the shorter side to ``size`` with bicubic resampling, centre-crop
``size x size``. It returns uint8 pixels; scaling to [0, 1] and the mean/std normalisation run on the
encoder's device (:func:`normalize`), so workers ship 1 byte per pixel. Pillow is imported lazily
(``pip install 'recbole_mm[clip]'``).

Unreadable or truncated files are not errors here: they come back as ``None`` with the reason, and the
caller counts them and writes a zero row.
"""

import multiprocessing
import os
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("image decoding needs Pillow: pip install 'recbole_mm[clip]'") from None
    return Image


def decode_image(path: str, size: int, draft: bool = False) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """Decode, resize (shorter side to ``size``, bicubic) and centre-crop one image.

    Args:
        path: image file.
        size: output side in pixels.
        draft: let the JPEG decoder downscale by a power of two first (still at least ``size``):
            much faster on large JPEGs, pixel values differ slightly from the reference pipeline.

    Returns:
        ``(pixels [size, size, 3] uint8, None)``, or ``(None, reason)`` when the file cannot be decoded.
    """
    Image = _pil()
    try:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (size, size))
            image = image.convert("RGB")  # forces a full decode: truncated files fail here
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        return None, f"{type(err).__name__}: {err}"
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)  # the rounding torchvision and transformers use
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8), None


def _decode_task(args):
    path, size, draft = args
    return decode_image(path, size, draft)


class ImageDecoder:
    """A pool of worker processes decoding images in order.

    Args:
        size: output side in pixels.
        workers: worker processes; 0 decodes in the calling process.
        draft: see :func:`decode_image`.

    Use as a context manager; :meth:`imap` yields ``(pixels or None, reason or None)`` per path, in
    order, while the workers run ahead of the consumer.
    """

    def __init__(self, size: int, workers: Optional[int] = None, draft: bool = False):
        self.size = size
        self.draft = draft
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._pool = None

    def start(self) -> "ImageDecoder":
        """Start the worker processes (idempotent; nothing to start with 0 workers)."""
        if self.workers > 0 and self._pool is None:
            _pil()  # fail in the parent with the install hint, not in every worker
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def imap(self, paths: Iterable[str]) -> Iterator[Tuple[Optional[np.ndarray], Optional[str]]]:
        tasks = ((p, self.size, self.draft) for p in paths)
        if self._pool is None:
            return map(_decode_task, tasks)
        return self._pool.imap(_decode_task, tasks, chunksize=8)


def normalize(pixels: np.ndarray, device, dtype=None, mean=CLIP_MEAN, std=CLIP_STD):
    """uint8 ``[b, h, w, 3]`` -> normalised ``[b, 3, h, w]`` torch tensor on ``device`` in ``dtype`` (default float32).

    torch is imported here, not at module level: decoding workers import this module and need only Pillow.
    """
    import torch

    x = torch.from_numpy(pixels).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype or torch.float32)

"""Pillow's process-wide settings, held for as long as any thread checks or renders an upload."""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from image_policy.walk import ScanLimits

_lock = threading.Lock()
_active: Counter[int] = Counter()  # max_pixels of each call inside ``pillow_configured``
_saved_pixels: int | None = None
_quiet: warnings.catch_warnings | None = None  # entered by the first call in, left by the last


@contextmanager
def pillow_configured(limits: ScanLimits) -> Iterator[None]:
    """Pillow set up for this call, whatever the calling process has (or has not) configured.

    Pillow raises its bomb error above twice ``Image.MAX_IMAGE_PIXELS`` (and only warns below),
    inside ``Image.open``: before any decoder exists, including WebP's, which allocates its canvas
    when it is created. Half of ``limits.max_pixels`` makes that error fire just above our limit;
    the callers then compare exactly. Pillow's warnings never surface, even under ``-W error``:
    the bomb warning is superseded, and the UserWarnings are notes on malformed input that no
    caller can act on.

    Both settings are process-wide, and accounts checks uploads in several threads at once: the
    first call in sets them, the last one out restores them (a ``warnings.catch_warnings`` per call
    would restore another thread's filters when calls overlap). Overlapping calls with different
    limits get the largest pixel budget from Pillow, still refused exactly by the callers.
    """
    _enter(limits.max_pixels)
    try:
        yield
    finally:
        _leave(limits.max_pixels)


def _enter(max_pixels: int) -> None:
    global _saved_pixels, _quiet
    with _lock:
        if not _active:
            _saved_pixels, _quiet = Image.MAX_IMAGE_PIXELS, warnings.catch_warnings()
            _quiet.__enter__()
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
        _active[max_pixels] += 1
        Image.MAX_IMAGE_PIXELS = (max(_active) + 1) // 2


def _leave(max_pixels: int) -> None:
    global _quiet
    with _lock:
        _active[max_pixels] -= 1
        if _active[max_pixels] == 0:
            del _active[max_pixels]
        if _active:
            Image.MAX_IMAGE_PIXELS = (max(_active) + 1) // 2
            return
        Image.MAX_IMAGE_PIXELS = _saved_pixels
        if _quiet is not None:
            _quiet.__exit__(None, None, None)
            _quiet = None

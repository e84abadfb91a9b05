"""The check both services run on an upload before decoding it: the structural pre-scan, the
format allow-list by content, and the limits from the header."""

from __future__ import annotations

import asyncio
import io
import re
import struct
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from image_policy.errors import ImageRejected
from image_policy.pillow_setup import pillow_configured
from image_policy.prescan import ScanLimits, Structure, prescan
from image_policy.sniff import accepted_formats, sniff, unidentified

__all__ = [
    "DECODE_ERRORS",
    "ImageInfo",
    "ImageRejected",
    "Limits",
    "Structure",
    "measure",
    "open_image",
    "pillow_configured",
    "probe",
    "probe_head",
    "probe_off_loop",
]

_SUBTYPES = {"MPO": "jpeg"}  # MIME subtype where it is not the lower-cased format name
# Formats whose opener reads the file from its start to the first frame's data and no further:
# Pillow's JPEG (SOF before the first SOS), PNG (IHDR before the first IDAT) and GIF (screen
# descriptor, then blocks up to the first image descriptor). Not WebP, AVIF, HEIF: their openers
# parse the whole container, and AVIF and HEIF may put their size after the pixel data.
_READ_FROM_THE_HEAD = frozenset({"JPEG", "PNG", "GIF"})
# ISO-BMFF formats, whose openers parse the whole container in C.
_CONTAINERS = frozenset({"AVIF", "HEIF"})
# What Pillow's parsers and decoders raise on cut or corrupt input (found by reading and fuzzing;
# Pillow documents no narrower set).
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    LookupError,
    TypeError,
    ArithmeticError,
    RuntimeError,  # the AVIF plugin's decoder
    Image.DecompressionBombError,
)

# The upload policy: bytes, pixels and the pre-scan's caps, all inclusive (exactly the limit is
# accepted). Each service builds it from its settings.
Limits = ScanLimits
_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ImageInfo:
    """What the header says. ``width`` and ``height`` are as stored, before EXIF orientation
    (a HEIF's after its own transforms, ``irot`` and ``clap``, which libheif applies)."""

    format: str
    content_type: str
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


def probe(data: bytes, limits: Limits = _DEFAULT_LIMITS) -> ImageInfo:
    """Identify ``data`` by content (never by name) and check the limits from its header alone;
    never decodes pixel data. Raises ImageRejected.

    ``data`` must be the whole upload: Pillow's WebP and AVIF openers and pillow_heif's parse
    the complete container, so a prefix of a larger WebP, AVIF or HEIF file is refused as
    TRUNCATED (a HEIF whose item data the bytes do not hold, too: libheif would decode it). A
    file whose pixel data is cut short passes here; the renderer, which decodes, reports it as
    TRUNCATED.
    Bounded work (the pre-scan runs before Pillow parses anything), but blocking: from a
    coroutine, call ``probe_off_loop``.
    """
    with pillow_configured(limits):
        img = open_image(data, limits)
    fmt = img.format or ""
    return ImageInfo(fmt, f"image/{_SUBTYPES.get(fmt, fmt.lower())}", *img.size)


def probe_head(head: bytes, size: int, limits: Limits = _DEFAULT_LIMITS) -> ImageInfo | None:
    """``probe`` of a file of ``size`` bytes from its first bytes ``head`` alone, where they are
    enough: what ``probe`` of the whole file would return, or None when only the whole file can
    tell. ``head`` is the whole file when ``len(head) >= size``: then this is ``probe``.

    None for WebP, AVIF and HEIF (their openers need the whole file), for a header longer than
    ``head``, and for any refusal of ``head``: the caller then probes the whole file, so that a
    refusal is always the whole file's (a cut EXIF block, say, can look worse than the whole).
    Raises ImageRejected only for the whole file: TOO_LARGE from ``size`` alone, or ``probe``'s.

    What the head of a larger JPEG, PNG or GIF cannot show, and so is not refused here: the
    pre-scan's counts past it (JPEG scans and the segments between them, PNG chunks, text and
    APNG frames after the first IDAT, GIF frames and their blocks, the structures walked in the
    whole file) and damage to the pixel data. The renderer pre-scans the whole file before it
    decodes anything and refuses those (TOO_COMPLEX, TRUNCATED), as it refuses pixel data cut
    short today. Bounded work on any bytes, as ``probe``; blocking.
    """
    if len(head) >= size:
        return probe(head, limits)
    _check_bytes(size, limits)
    if sniff(head) not in _READ_FROM_THE_HEAD:
        return None
    try:
        return probe(head, limits)
    except ImageRejected:
        return None


async def probe_off_loop(data: bytes, limits: Limits) -> ImageInfo:
    """``probe`` in a worker thread, so that the event loop never runs the check."""
    return await asyncio.to_thread(probe, data, limits)


def measure(data: bytes, limits: Limits = _DEFAULT_LIMITS) -> Structure:
    """Format, size and frames from the structural pre-scan alone, with no Pillow parsing: what
    imaging's main process needs to admit a render (its megapixels) without doing the render
    process's work. Bounded (under 30 ms of CPU for 20 MiB); run it off the event loop.

    Raises ImageRejected: EMPTY, TOO_LARGE, TOO_COMPLEX, and TOO_MANY_PIXELS when the header
    sizes it read say so. Anything else (not an image, damaged, another format) passes with
    what could be read, format None or sizes 0 included: the render process gives the verdict.
    """
    structure = _prescan(data, limits)
    if structure.width and structure.height:
        _check_pixels((structure.width, structure.height), limits)
    return structure


def open_image(data: bytes, limits: Limits) -> ImageFile.ImageFile:
    """Identify the format by content and apply the limits from the header, decoding nothing.

    Call inside ``pillow_configured``. Every check here runs before Pillow allocates a pixel,
    and the pre-scan before Pillow parses anything. AVIF and HEIF are refused for their pixels
    before their openers see a byte: libavif and libheif parse the whole container in C, and
    the pre-scan has their size already (the primary item's ``ispe``, a HEIF grid's output).
    """
    structure = _prescan(data, limits)
    if structure.format in _CONTAINERS and structure.width and structure.height:
        _check_pixels((structure.width, structure.height), limits)
    if structure.cut:
        raise ImageRejected("TRUNCATED", f"the {structure.format} file is cut short")
    try:
        img = Image.open(io.BytesIO(data), formats=accepted_formats())
    except Image.DecompressionBombError as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's message names the size
        pixels = f"{int(declared[1]):,} pixels" if declared else "more pixels"
        reason = f"the header declares {pixels}, above the limit of {limits.max_pixels:,}"
        raise ImageRejected("TOO_MANY_PIXELS", reason) from exc
    except UnidentifiedImageError as exc:
        raise unidentified(data) from exc
    except DECODE_ERRORS as exc:
        raise ImageRejected("TRUNCATED", f"the image header is damaged: {exc}") from exc
    _check_pixels(img.size, limits)
    return img


def _prescan(data: bytes, limits: Limits) -> Structure:
    """EMPTY and TOO_LARGE before anything is parsed, then the pre-scan (TOO_COMPLEX)."""
    if not data:
        raise ImageRejected("EMPTY", "the upload is empty")
    _check_bytes(len(data), limits)
    return prescan(data, limits)


def _check_bytes(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise ImageRejected(
            "TOO_LARGE", f"the upload is {size:,} bytes, over the limit of {limits.max_bytes:,}"
        )


def _check_pixels(size: tuple[int, int], limits: Limits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected("TRUNCATED", f"the header declares an empty {width}x{height} image")
    if width * height > limits.max_pixels:
        raise ImageRejected(
            "TOO_MANY_PIXELS",
            f"{width}x{height} is {width * height:,} pixels, above {limits.max_pixels:,}",
        )

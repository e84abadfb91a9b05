"""The pre-scan's limits, its result, and the counters every format walker spends against them."""

from __future__ import annotations

from dataclasses import dataclass

from image_policy.errors import ImageRejected

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ScanLimits:
    """The upload policy; every limit is inclusive (exactly the limit is accepted).

    ``max_bytes`` and ``max_pixels`` are checked by ``image_policy.formats`` (codes TOO_LARGE
    and TOO_MANY_PIXELS); the others by ``prescan`` (code TOO_COMPLEX). The defaults pass every
    legitimate file we know of with a wide margin and bound the scan under 30 ms of CPU for any
    20 MiB input (bench/prescan.py measures it).
    """

    max_bytes: int = 20 * _MIB
    max_pixels: int = 50_000_000
    # Segments, chunks, blocks or boxes before the first frame: the part Pillow's header parser
    # walks in Python, one step each (stray bytes between JPEG segments or GIF blocks count one
    # each: Pillow reads them one at a time). The same cap holds the entries of EXIF and MPF
    # directories and Photoshop resources together, and JPEG segments between scans. A phone
    # JPEG has 10 to 20 segments, one with a 4 MB ICC profile split in 64 KB segments about 80;
    # cameras write 100 to 300 EXIF entries; encoders two segments a scan.
    max_segments: int = 1_000
    # Metadata Pillow parses, inflates or copies, in total: EXIF, ICC profiles, XMP, Photoshop
    # resources, PNG text, GIF comments and application data, WebP and ISO-BMFF metadata.
    # Compressed PNG text counts as what Pillow may inflate (up to 1 MiB each), EXIF values as
    # what Pillow copies out (overlapping values count each time). JPEG comments and other APPn
    # segments are bytes Pillow only keeps (a corpus file is 20 MiB of comments): not counted.
    # Large CMYK print profiles reach 4 MB, Google's depth photos carry a few MB of XMP.
    max_metadata_bytes: int = 8 * _MIB
    # Scans per JPEG frame: libjpeg-turbo writes 10 for a progressive JPEG, custom jpegtran
    # scripts a few dozen; the decoder's time grows with each scan.
    max_scans: int = 100
    # Animation frames (GIF, APNG, animated WebP): long GIFs have hundreds, a minute at 30 fps
    # 1,800. Only the first frame is rendered; this bounds the scan's walk through the others.
    max_frames: int = 3_000
    # Every structure the scan walks in the whole file (segments, chunks, blocks, sub-blocks,
    # boxes, directory entries), at about 1 us each. A 20 MiB PNG written in libpng's 8 KiB IDAT
    # chunks has 2,600 chunks; a long GIF about 4 per frame.
    max_blocks: int = 20_000


@dataclass(frozen=True)
class Structure:
    """What the pre-scan read. ``width`` and ``height`` are the header's (0 when unknown), before
    EXIF orientation; ``frames`` is 0 when the format is not recognised. ``cut`` is set when the
    bytes end before data the header places in them (AVIF and HEIF item data: libheif decodes
    a cut HEIF without an error, into a picture that stops where the bytes do)."""

    format: str | None  # "JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF", or None
    width: int
    height: int
    frames: int
    cut: bool = False

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


class TooComplex(ImageRejected):
    """The file's structure is past a limit of ``ScanLimits`` (code TOO_COMPLEX); ``reason``
    names what and how many. Permanent: the same bytes are always refused."""

    def __init__(self, reason: str) -> None:
        super().__init__("TOO_COMPLEX", reason)

    def __reduce__(self) -> tuple[type[TooComplex], tuple[str]]:
        return type(self), (self.reason,)  # pickles across processes


class Damaged(Exception):
    """The structure ends or breaks here: the scan stops and leaves the verdict to Pillow."""


class Walk:
    """One scan: the bytes, what is known so far, and the counters against the limits."""

    def __init__(self, view: memoryview, limits: ScanLimits, format: str) -> None:
        self.view = view
        self.limits = limits
        self.format = format
        self.width = 0
        self.height = 0
        self.frames = 0
        self.cut = False
        self._steps = 0
        self._header = 0
        self._entries = 0
        self._metadata = 0

    def step(self, what: str, count: int = 1) -> None:
        """``count`` structures walked anywhere in the file."""
        self._steps += count
        if self._steps > self.limits.max_blocks:
            raise TooComplex(f"more than {self.limits.max_blocks:,} {what}")

    def steps_left(self) -> int:
        return max(0, self.limits.max_blocks - self._steps)

    def header(self, what: str, count: int = 1) -> None:
        """``count`` structures before the first frame (also walked: counts as steps)."""
        self._header += count
        if self._header > self.limits.max_segments:
            raise TooComplex(
                f"more than {self.limits.max_segments:,} {what} before the first frame"
            )
        self.step(what, count)

    def entries(self, what: str, count: int) -> None:
        self._entries += count
        if self._entries > self.limits.max_segments:
            raise TooComplex(f"more than {self.limits.max_segments:,} {what}")
        self.step(what, count)

    def metadata(self, what: str, size: int) -> None:
        self._metadata += size
        if self._metadata > self.limits.max_metadata_bytes:
            raise TooComplex(
                f"more than {self.limits.max_metadata_bytes:,} bytes of metadata ({what})"
            )

    def frame(self, what: str) -> None:
        self.frames += 1
        if self.frames > self.limits.max_frames:
            raise TooComplex(f"more than {self.limits.max_frames:,} {what}")

    def structure(self) -> Structure:
        return Structure(self.format, self.width, self.height, self.frames, self.cut)

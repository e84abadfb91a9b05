"""The one rejection both services give an upload: a code from ``CODES`` and a reason."""

from __future__ import annotations

# Every code an upload can be refused with; clients see them unchanged (accounts puts them in
# its InvalidArgument details, imaging in its job failures and RenderThumbnails errors).
CODES = (
    "EMPTY",  # zero bytes
    "TOO_LARGE",  # more than ``max_bytes`` bytes (checked before anything is parsed)
    "NOT_AN_IMAGE",  # no image signature at all (text, HTML, documents, archives, video, noise)
    "UNSUPPORTED_FORMAT",  # a recognisable image format outside the allow-list (SVG, TIFF, ...)
    "TOO_MANY_PIXELS",  # the header declares more than ``max_pixels`` pixels
    # The structure is past a cap of the pre-scan (segments, metadata, scans, frames), or the
    # render ran past its time budget.
    "TOO_COMPLEX",
    # An accepted format whose header (or, found only by decoding, data) is cut short or corrupt.
    "TRUNCATED",
)


class ImageRejected(Exception):
    """Permanent: these bytes can never become an avatar. ``code`` is one of ``CODES``;
    ``reason`` says what was wrong, for people (it never quotes the bytes)."""

    def __init__(self, code: str, reason: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown rejection code {code!r}")
        super().__init__(code, reason)  # both in args, so the error pickles across processes
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

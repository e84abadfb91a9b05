"""The bench corpus: real ~0.3 MP photos from the shared test images, and 12 MP phone-like JPEGs
made from them at run time (too big to commit, and cheap to make the same every time).

The photos are in $AVATAR_TESTDATA, else ../shared/testdata/images beside the repository (as
for the tests); their provenance and licences are in that folder's manifest.json.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = (
    "photo_china_original.jpg",  # 640x427 baseline JPEG with an sRGB profile
    "photo_grace_hopper_baseline_q88.jpg",  # 512x600 baseline JPEG
    "photo_coffee_progressive_q80.jpg",  # 600x400 progressive JPEG
    "photo_chelsea.png",  # 451x300 PNG
)
PHONE_SIZE = (4032, 3024)  # 12.2 MP, the usual 4:3 phone sensor
PHONE_GRAIN = 10  # uniform grain of +-10 levels: about 4 MB a picture, as phones write
PHONE_QUALITY = 92


def testdata_dir() -> Path:
    path = Path(os.environ.get("AVATAR_TESTDATA") or REPO_ROOT.parent / "shared/testdata/images")
    if not (path / "manifest.json").is_file():
        raise SystemExit(f"shared test images not found in {path} (set AVATAR_TESTDATA)")
    return path


def small_photos() -> dict[str, bytes]:
    """The real photos, by file name."""
    return {name: (testdata_dir() / name).read_bytes() for name in PHOTOS}


def phone_jpeg(photo: bytes, seed: int) -> bytes:
    """A 12 MP JPEG as a phone writes it: the photo enlarged to 4032x3024 (3024x4032 when it is
    portrait), with luminance grain so that it has a phone's detail and file size, baseline,
    4:2:0, quality 92, keeping the photo's ICC profile. Upright (no EXIF orientation), because the
    reference pipeline does not apply it. The same bytes for the same photo and seed."""
    img = Image.open(io.BytesIO(photo))
    icc = img.info.get("icc_profile")
    width, height = PHONE_SIZE if img.width >= img.height else PHONE_SIZE[::-1]
    big = ImageOps.fit(img.convert("RGB"), (width, height), Image.Resampling.BICUBIC)
    noise = Image.frombytes("L", big.size, random.Random(seed).randbytes(width * height))
    grain = noise.point(lambda v: 128 + (v - 128) * PHONE_GRAIN // 128)
    big = ImageChops.add(big, Image.merge("RGB", (grain, grain, grain)), offset=-128)
    out = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    big.save(out, "JPEG", quality=PHONE_QUALITY, subsampling="4:2:0", **extra)
    return out.getvalue()


def classes() -> dict[str, dict[str, bytes]]:
    """{"0.3mp": {name: bytes}, "12mp": {name: bytes}}."""
    small = small_photos()
    phone = {
        name.rsplit(".", 1)[0] + "_12mp.jpg": phone_jpeg(data, seed)
        for seed, (name, data) in enumerate(small.items())
    }
    return {"0.3mp": small, "12mp": phone}

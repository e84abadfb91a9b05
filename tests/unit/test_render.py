"""The pure renderer against the shared corpus, synthetic images and mutated bytes."""

from __future__ import annotations

import contextlib
import io
import math
import pickle
import random
import struct
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageOps, ImageStat

from image_policy.formats import ImageInfo, ImageRejected, Limits, probe
from imaging_service.render import DEFAULT_SIZES, Thumbnail, render
from tests.corpus import CODES, MARKERS, QUADRANT_SAMPLES, codec_available

Corpus = Callable[[str], bytes]
Entry = dict[str, Any]
RGB = tuple[float, float, float]


# ----------------------------------------------------------------------------- helpers


def decode(thumb: Thumbnail) -> Image.Image:
    img = Image.open(io.BytesIO(thumb.png))
    img.load()
    return img


def render_ok_file(entry: Entry, data: bytes) -> list[Image.Image] | None:
    """Thumbnails of an "ok" file; None (after checking the refusal) when its codec is missing."""
    if "codec" in entry and not codec_available(entry):
        with pytest.raises(ImageRejected) as refused:
            render(data)
        assert refused.value.code == CODES[entry["codec"]["if_unavailable"]["reason"]]
        return None
    return [decode(t) for t in render(data)]


def rgba_pixels(img: Image.Image) -> list[tuple[int, ...]]:
    data = img.convert("RGBA").tobytes()
    return [tuple(data[i : i + 4]) for i in range(0, len(data), 4)]


def sample(img: Image.Image, fx: float, fy: float) -> RGB:
    """Mean RGB of a small box around (fx, fy), given as fractions of the size."""
    n = img.size[0]
    r, x, y = max(1, n // 50), int(fx * n), int(fy * n)
    mean = ImageStat.Stat(img.convert("RGB").crop((x - r, y - r, x + r + 1, y + r + 1))).mean
    return mean[0], mean[1], mean[2]


def nearest_marker(rgb: RGB) -> tuple[str, float]:
    name = min(MARKERS, key=lambda m: math.dist(rgb, MARKERS[m]))
    return name, math.dist(rgb, MARKERS[name])


def disc(size: int, fraction: float = 0.9) -> Image.Image:
    """A hard-edged mask of the central disc, ``fraction`` of the thumbnail's diameter."""
    mask = Image.new("L", (size, size), 0)
    margin = size * (1 - fraction) / 2
    ImageDraw.Draw(mask).ellipse((margin, margin, size - margin, size - margin), fill=255)
    return mask


def opaque(img: Image.Image) -> Image.Image:
    return img.getchannel("A").point(lambda a: 255 if a == 255 else 0)


def mean_rgb(img: Image.Image, mask: Image.Image) -> RGB:
    mean = ImageStat.Stat(img.convert("RGB"), mask).mean
    return mean[0], mean[1], mean[2]


def difference(a: Image.Image, b: Image.Image, mask: Image.Image) -> float:
    """Largest per-channel mean absolute RGB difference under ``mask``."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return max(ImageStat.Stat(diff, mask).mean)


def reference(data: bytes, size: int, *, manage_colour: bool = True) -> Image.Image:
    """The same thumbnail made the plain-Pillow way (as the corpus's verify.py does), unmasked."""
    img = Image.open(io.BytesIO(data))
    img.load()
    icc = img.info.get("icc_profile")
    upright = ImageOps.exif_transpose(img)
    if upright.mode.startswith("I;16"):
        upright = upright.convert("I").point(lambda v: v / 257 + 0.5).convert("L")
    if manage_colour and icc and upright.mode == "RGB":
        managed = ImageCms.profileToProfile(
            upright,
            ImageCms.ImageCmsProfile(io.BytesIO(icc)),
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        )
        assert managed is not None
        upright = managed
    if upright.mode in ("L", "RGB"):  # opaque: crop before converting (the 50 MP file)
        return ImageOps.fit(upright, (size, size), Image.Resampling.LANCZOS).convert("RGBA")
    return ImageOps.fit(upright.convert("RGBA"), (size, size), Image.Resampling.LANCZOS)


def png_chunk_types(png: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        types.append(kind)
        pos += 12 + length
    return types


def encode(img: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


# ----------------------------------------------------------------------------- the corpus


def test_ok_file_renders_three_round_rgba_pngs(ok_entry: Entry, corpus: Corpus) -> None:
    thumbs = render_ok_file(ok_entry, corpus(ok_entry["name"]))
    if thumbs is None:
        return
    assert [t.size for t in thumbs] == [(n, n) for n in DEFAULT_SIZES]
    for img in thumbs:
        n = img.size[0]
        assert (img.format, img.mode) == ("PNG", "RGBA")
        alpha = img.getchannel("A")
        assert [alpha.getpixel(c) for c in ((0, 0), (n - 1, 0), (0, n - 1), (n - 1, n - 1))] == [
            0
        ] * 4
        if not ok_entry.get("transparency"):
            assert alpha.getpixel((n // 2, n // 2)) == 255


def test_ok_file_is_close_to_a_plain_pillow_thumbnail(ok_entry: Entry, corpus: Corpus) -> None:
    data = corpus(ok_entry["name"])
    thumbs = render_ok_file(ok_entry, data)
    if thumbs is None:
        return
    for img in thumbs:
        ref = reference(data, img.size[0])
        both_opaque = ImageChops.multiply(opaque(img), opaque(ref))
        mask = ImageChops.multiply(both_opaque, disc(img.size[0]))
        # JPEG DCT scaling (draft) is the only expected source of difference.
        assert difference(img, ref, mask) < 2.0


def test_probe_reports_the_header_of_an_ok_file(ok_entry: Entry, corpus: Corpus) -> None:
    data = corpus(ok_entry["name"])
    if "codec" in ok_entry and not codec_available(ok_entry):
        with pytest.raises(ImageRejected, match="UNSUPPORTED_FORMAT"):
            probe(data)
        return
    info = probe(data)
    assert (info.format, [info.width, info.height]) == (ok_entry["format"], ok_entry["size"])
    assert info.content_type == Image.MIME[info.format]
    assert info.megapixels == pytest.approx(info.width * info.height / 1e6)


def test_reject_file_is_refused_with_an_accepted_code(reject_entry: Entry, corpus: Corpus) -> None:
    accepted = {CODES[reason] for reason in reject_entry["accept_reasons"]}
    with pytest.raises(ImageRejected) as refused:
        render(corpus(reject_entry["name"]))
    assert refused.value.code in accepted
    assert refused.value.reason


def test_reject_file_found_from_the_header_is_refused_by_probe(
    reject_entry: Entry, corpus: Corpus
) -> None:
    data = corpus(reject_entry["name"])
    if reject_entry["reason"] == "truncated":  # cut pixel data needs decoding: render's job
        try:
            probe(data)
        except ImageRejected as exc:
            assert exc.code in {CODES[r] for r in reject_entry["accept_reasons"]}
        return
    with pytest.raises(ImageRejected) as refused:
        probe(data)
    assert refused.value.code in {CODES[r] for r in reject_entry["accept_reasons"]}


def test_exif_orientation_makes_the_card_upright(orientation_entry: Entry, corpus: Corpus) -> None:
    expected = orientation_entry["orientation"]["upright_quadrant_colours"]
    for img in map(decode, render(corpus(orientation_entry["name"]))):
        for quadrant, (fx, fy) in QUADRANT_SAMPLES.items():
            colour, distance = nearest_marker(sample(img, fx, fy))
            assert (quadrant, colour) == (quadrant, expected[quadrant]) and distance < 70


def test_animation_renders_its_first_frame(animation_entry: Entry, corpus: Corpus) -> None:
    want = animation_entry["first_frame"]["centre_colour"]
    for thumb in render(corpus(animation_entry["name"])):
        colour, distance = nearest_marker(sample(decode(thumb), 0.5, 0.5))
        assert colour == want and distance < 70


def test_colour_hidden_under_transparency_never_shows(
    hidden_key_entry: Entry, corpus: Corpus
) -> None:
    key = hidden_key_entry["hidden_key_colour"]
    for thumb in render(corpus(hidden_key_entry["name"])):
        img = decode(thumb)
        n = img.size[0]
        assert ImageStat.Stat(img.getchannel("A"), disc(n)).extrema[0][0] == 0, "no transparency"
        shown = [
            (r, g, b)
            for r, g, b, a in rgba_pixels(img)
            if a > 200 and abs(r - key[0]) + abs(g - key[1]) + abs(b - key[2]) < 60
        ]
        assert not shown


def test_embedded_icc_profile_is_converted_to_srgb(
    colour_check_entry: Entry, corpus: Corpus
) -> None:
    data = corpus(colour_check_entry["name"])
    check = colour_check_entry["colour_check"]
    for thumb in render(data):
        img, inside = decode(thumb), disc(thumb.size)
        got = mean_rgb(img, inside)
        assert math.dist(got, mean_rgb(reference(data, thumb.size), inside)) < 1.0
        ignored = mean_rgb(reference(data, thumb.size, manage_colour=False), inside)
        assert math.dist(got, ignored) > 10
        # The manifest's means are of the whole picture, the thumbnail's of its centre.
        assert (
            max(abs(a - b) for a, b in zip(got, check["mean_rgb_colour_managed"], strict=True)) < 4
        )
        assert math.dist(got, check["mean_rgb_colour_managed"]) < math.dist(
            got, check["mean_rgb_profile_ignored"]
        )


def test_sixteen_bit_grey_is_scaled_not_clipped(corpus: Corpus) -> None:
    sixteen = [decode(t) for t in render(corpus("mode_I16_camera.png"))]
    eight = [decode(t) for t in render(corpus("mode_L_camera.png"))]
    for img16, img8 in zip(sixteen, eight, strict=True):
        inside = disc(img16.size[0])
        assert mean_rgb(img16, inside)[0] < 200  # clipping would give an almost white picture
        assert difference(img16, img8, inside) < 2.0


def test_thumbnails_carry_no_metadata(corpus: Corpus) -> None:
    for name in (
        "photo_china_original.jpg",
        "exif_orientation_6_in_png.png",
        "exif_orientation_6.jpg",
    ):
        for thumb in render(corpus(name)):
            assert set(png_chunk_types(thumb.png)) == {b"IHDR", b"IDAT", b"IEND"}


def test_one_pixel_source_is_scaled_up_to_a_flat_disc(corpus: Corpus) -> None:
    data = corpus("geom_1x1.png")
    colour = Image.open(io.BytesIO(data)).convert("RGB").tobytes()
    for thumb in render(data):
        img = decode(thumb)
        extrema = ImageStat.Stat(img.convert("RGB"), disc(thumb.size)).extrema
        assert extrema == [(c, c) for c in colour]


# ----------------------------------------------------------------------------- synthetic pictures


def test_circle_is_inscribed_and_anti_aliased_about_one_pixel_wide() -> None:
    data = encode(Image.new("RGB", (300, 200), (40, 120, 200)))
    for size in (100, 200, 400, 33):
        (thumb,) = render(data, sizes=(size,))
        alpha = decode(thumb).getchannel("A")
        assert alpha.tobytes() == ImageOps.mirror(alpha).tobytes() == ImageOps.flip(alpha).tobytes()
        rim, values = 0, alpha.tobytes()
        for y in range(size):
            for x in range(size):
                a = values[y * size + x]
                d = math.hypot(x + 0.5 - size / 2, y + 0.5 - size / 2) - size / 2
                assert (d > -1 or a == 255) and (d < 1 or a == 0), (x, y, a)
                rim += 0 < a < 255
        assert rim > 2 * math.pi * size / 2 * 0.8, "the edge is not anti-aliased"


@pytest.mark.parametrize("size", [(600, 300), (300, 602)])
def test_the_picture_is_cropped_around_its_centre(size: tuple[int, int]) -> None:
    source = Image.new("RGB", size, MARKERS["green"])
    side = min(size)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    source.paste(MARKERS["red"], (left, top, left + side, top + side))
    for thumb in render(encode(source)):
        img = decode(thumb)
        inner = [(r, g, b) for r, g, b, a in rgba_pixels(img) if a == 255]
        assert inner and all(nearest_marker(p)[0] == "red" for p in inner)


def test_transparent_pixels_carry_no_colour(corpus: Corpus) -> None:
    for data in (corpus("photo_chelsea.png"), corpus("mode_RGBA_cutout.png")):
        for thumb in render(data):
            pixels = rgba_pixels(decode(thumb))
            assert any(p[3] == 0 for p in pixels)
            assert all(p == (0, 0, 0, 0) for p in pixels if p[3] == 0)


def test_mean_colour_matches_plain_pillow() -> None:
    source = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((500, 300)),
            Image.radial_gradient("L").resize((500, 300)),
            Image.new("L", (500, 300), 90),
        ),
    )
    data = encode(source)
    for thumb in render(data):
        img, inside = decode(thumb), disc(thumb.size)
        want = mean_rgb(ImageOps.fit(source, img.size, Image.Resampling.LANCZOS), inside)
        assert math.dist(mean_rgb(img, inside), want) < 1.0


def test_resizing_uses_premultiplied_alpha() -> None:
    source = Image.new("RGBA", (200, 200), (0, 255, 0, 0))  # green, but fully transparent
    source.paste((200, 20, 20, 255), (0, 0, 100, 200))
    for thumb in render(encode(source), sizes=(100, 37, 400)):
        img = decode(thumb)
        visible = [(r, g, a) for r, g, b, a in rgba_pixels(img) if a > 0]
        # Straight-alpha resizing would mix green into the red edge; premultiplied only loses
        # precision where alpha is tiny.
        assert visible and all(g < r / 2 for r, g, a in visible)
        assert all(g <= 25 for r, g, a in visible if a >= 64)
        assert img.getchannel("A").getpixel((thumb.size * 3 // 4, thumb.size // 2)) == 0


def test_large_oriented_jpeg_keeps_its_detail() -> None:
    """DCT scaling must leave the upright crop at least as large as the largest thumbnail."""
    checks = Image.new("L", (3200, 1000), 30)
    draw = ImageDraw.Draw(checks)
    for x in range(0, 3200, 20):
        draw.rectangle((x, 0, x + 9, 999), fill=220)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(checks.convert("RGB"), "JPEG", quality=95, exif=exif)
    for thumb in render(data):
        img, ref = decode(thumb), reference(data, thumb.size)
        inside = disc(thumb.size)
        assert difference(img, ref, inside) < 6
        spread = ImageStat.Stat(img.convert("L"), inside).stddev[0]
        # Decoded at 1/8 scale (short side 125 px), the stripes would blur to 60% of this.
        assert spread > 0.9 * ImageStat.Stat(ref.convert("L"), inside).stddev[0]


def test_multi_picture_jpeg_renders_its_first_picture() -> None:
    out = io.BytesIO()
    first, second = Image.new("RGB", (120, 90), MARKERS["red"]), Image.new("RGB", (120, 90))
    first.save(out, "MPO", save_all=True, append_images=[second])
    assert probe(out.getvalue()) == ImageInfo("MPO", "image/jpeg", 120, 90)
    (thumb,) = render(out.getvalue(), sizes=(50,))
    assert nearest_marker(sample(decode(thumb), 0.5, 0.5))[0] == "red"


def test_custom_sizes_come_back_in_order() -> None:
    data = encode(Image.new("RGB", (64, 48), (9, 9, 9)))
    assert [t.size for t in render(data, sizes=(48, 16, 300))] == [48, 16, 300]
    for bad in ((), (0,), (100, -1)):
        with pytest.raises(ValueError):
            render(data, sizes=bad)


# ----------------------------------------------------------------------------- limits


def test_byte_limit_is_inclusive_and_checked_before_parsing(corpus: Corpus) -> None:
    data = corpus("geom_64x64.png")
    assert render(data, sizes=(16,), limits=Limits(max_bytes=len(data)))
    for blob in (data, b"not an image at all" * 100):
        with pytest.raises(ImageRejected) as refused:
            render(blob, limits=Limits(max_bytes=len(blob) - 1))
        assert refused.value.code == "TOO_LARGE"


def test_pixel_limit_is_inclusive(corpus: Corpus) -> None:
    data = corpus("geom_64x64.png")
    assert probe(data, Limits(max_pixels=64 * 64)) == ImageInfo("PNG", "image/png", 64, 64)
    for check in (probe, render):
        with pytest.raises(ImageRejected, match="TOO_MANY_PIXELS"):
            check(data, limits=Limits(max_pixels=64 * 64 - 1))


def test_pillow_global_limit_of_the_caller_does_not_matter(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    for caller_setting in (1000, None):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", caller_setting)
        assert len(render(corpus("geom_64x64.png"))) == 3
        with pytest.raises(ImageRejected, match="TOO_MANY_PIXELS"):
            probe(corpus("bomb_png_52mp_8000x6500.png"))
        assert caller_setting == Image.MAX_IMAGE_PIXELS  # restored after each call


def test_pillow_warnings_never_escape_even_as_errors(corpus: Corpus) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe(corpus("geom_exactly_50mp_10000x5000.png")).megapixels == 50.0
        with pytest.raises(ImageRejected, match="TOO_MANY_PIXELS"):
            render(corpus("bomb_png_52mp_8000x6500.png"))


def test_rejection_survives_pickling_to_a_worker_parent() -> None:
    error = pickle.loads(pickle.dumps(ImageRejected("TRUNCATED", "cut at 50%")))
    assert (error.code, error.reason, str(error)) == (
        "TRUNCATED",
        "cut at 50%",
        "TRUNCATED: cut at 50%",
    )


# ----------------------------------------------------------------------------- header only


@pytest.fixture(scope="module")
def twelve_mp_jpeg() -> bytes:
    return encode(Image.radial_gradient("L").resize((4000, 3000)).convert("RGB"), "JPEG")


def test_probe_reads_the_header_only(twelve_mp_jpeg: bytes, corpus: Corpus) -> None:
    assert probe(twelve_mp_jpeg) == ImageInfo("JPEG", "image/jpeg", 4000, 3000)
    # Its first 4 KiB hold the header and hardly any pixel data: enough for probe.
    assert probe(twelve_mp_jpeg[:4096]) == ImageInfo("JPEG", "image/jpeg", 4000, 3000)
    for damaged_pixels in ("bad_truncated_50pct.jpg", "bad_png_corrupt_idat.png"):
        assert probe(corpus(damaged_pixels)).width > 0
        with pytest.raises(ImageRejected, match="TRUNCATED"):
            render(corpus(damaged_pixels))


def test_bomb_header_is_refused_from_the_header(corpus: Corpus) -> None:
    bomb = corpus("bomb_jpeg_header_60000x60000.jpg")
    assert len(bomb) < 100_000  # nothing to decode: the refusal comes from the header
    with pytest.raises(ImageRejected, match="TOO_MANY_PIXELS"):
        render(bomb)


# ----------------------------------------------------------------------------- arbitrary bytes

FUZZ_SEEDS = (
    "exif_orientation_6.jpg",
    "photo_coffee_progressive_q80.jpg",
    "geom_64x64.png",
    "mode_P_transparent.gif",
    "anim_cat.webp",
    "anim_pan.gif",
    "exif_orientation_6_in_png.png",
    "modern_astronaut.avif",
    "photo_astronaut_400_q80.webp",
    "mode_LA_grass.png",
)
SIGNATURES = (b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP")


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        blob = bytearray(data)
        if i % 3 == 0:
            blob = blob[: rng.randrange(1, len(blob))]
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(min(len(blob), 600 if i % 2 else len(blob)))
            blob[pos] = rng.randrange(256)
        out.append(bytes(blob))
    return out


def random_inputs(corpus: Corpus) -> list[bytes]:
    rng = random.Random(20240611)
    inputs = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(60)]
    inputs += [rng.choice(SIGNATURES) + rng.randbytes(rng.randrange(0, 3000)) for _ in range(60)]
    for name in FUZZ_SEEDS:
        inputs += mutations(corpus(name), rng, 30)
    return inputs


def test_any_bytes_either_render_or_raise_image_rejected(corpus: Corpus) -> None:
    outcomes: set[int | str] = set()
    for blob in random_inputs(corpus):
        try:
            outcomes.add(len(render(blob, sizes=(24,))))
        except ImageRejected as exc:
            outcomes.add(exc.code)
        with contextlib.suppress(ImageRejected):
            probe(blob)
    assert {1, "NOT_AN_IMAGE", "TRUNCATED"} <= outcomes

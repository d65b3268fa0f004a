"""Decoding of every kind of bad or unusual image, resizing, and safe zip extraction."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.inputs import images


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


@pytest.fixture
def photo(make_photo) -> Image.Image:
    return make_photo(seed=1, size=64)


@pytest.fixture
def jpeg_bytes(photo: Image.Image) -> bytes:
    return encode(photo, "JPEG", quality=90)


@pytest.fixture
def png_bytes(photo: Image.Image) -> bytes:
    return encode(photo, "PNG")


def decoded_pixel(data: bytes, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    image = images.decode_image(data)
    assert image.mode == "RGB"
    return image.getpixel(xy)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"%PDF-1.7\n1 0 obj << >> endobj\n", "PDF"),
        (b"image_name,target\nISIC_1,0\n", "text"),
        (b"<!DOCTYPE html><html></html>", "HTML"),
        (bytes(range(256)) * 4, "not an image"),
    ],
)
def test_non_images_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(images.ImageError, match=message):
        images.decode_image(data)


def test_truncated_jpeg_is_refused(jpeg_bytes: bytes) -> None:
    with pytest.raises(images.ImageError, match="truncated or corrupt"):
        images.decode_image(jpeg_bytes[: len(jpeg_bytes) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("1", (30000, 30000)), "PNG")  # 900 MP in about 100 kB
    assert len(bomb) < 1_000_000
    with pytest.raises(images.ImageError, match=r"900\.0 MP, over the 50\.0 MP limit"):
        images.decode_image(bomb)


def test_pixel_limit_is_adjustable_and_message_names_the_size(png_bytes: bytes) -> None:
    with pytest.raises(images.ImageError, match="64x64"):
        images.decode_image(png_bytes, max_pixels=1000)


def test_animated_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert decoded_pixel(data) == (255, 0, 0)


def test_multipage_tiff_uses_its_first_page() -> None:
    pages = [Image.new("RGB", (16, 16), colour) for colour in ((0, 255, 0), (255, 0, 0))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert decoded_pixel(data) == (0, 255, 0)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    red, green, blue = decoded_pixel(data)
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    levels = np.array([[0, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(levels), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    row = np.asarray(images.decode_image(data))[0, :, 0]
    assert row.tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (4, 4), 77), (77, 77, 77)),
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), (255, 255, 255)),
        (Image.new("RGBA", (4, 4), (0, 0, 255, 255)), (0, 0, 255)),
        (Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),
    ],
)
def test_colour_modes_become_rgb(image: Image.Image, expected: tuple[int, int, int]) -> None:
    assert decoded_pixel(encode(image, "PNG")) == expected


def test_palette_image_with_transparency_is_composited_on_white() -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette_image.putpixel((1, 1), 1)
    data = encode(palette_image, "PNG", transparency=0)
    assert decoded_pixel(data, (0, 0)) == (255, 255, 255)
    assert decoded_pixel(data, (1, 1)) == (200, 10, 10)


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = images.decode_image(encode(wide, "JPEG", quality=95, exif=exif))
    assert decoded.size == (20, 40)
    # The stored left half is the top once rotated clockwise.
    assert decoded.getpixel((10, 5))[0] > 200 and decoded.getpixel((10, 35))[0] < 50


def test_one_pixel_image_decodes_and_resizes() -> None:
    decoded = images.decode_image(encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"))
    array = images.resize_for_model(decoded, 8)
    assert array.shape == (8, 8, 3) and array.dtype == np.uint8
    assert (array == (9, 8, 7)).all()


def test_resize_keeps_the_whole_image_without_cropping() -> None:
    wide = Image.new("RGB", (100, 50), (255, 0, 0))
    wide.paste((0, 0, 255), (50, 0, 100, 50))
    for resample in images.RESAMPLE_FILTERS:
        array = images.resize_for_model(wide, 10, resample)
        assert array.shape == (10, 10, 3)
        assert array[5, 0].tolist() == [255, 0, 0] and array[5, 9].tolist() == [0, 0, 255]


def test_unknown_resample_filter_is_a_value_error(photo: Image.Image) -> None:
    with pytest.raises(ValueError, match="resample"):
        images.resize_for_model(photo, 8, "cubic-ish")


def test_load_image_file_names_the_file(tmp_path: Path, jpeg_bytes: bytes) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes)
    assert images.load_image_file(good, 16).shape == (16, 16, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not really a jpeg")
    with pytest.raises(images.ImageError, match="bad.jpg"):
        images.load_image_file(bad, 16)
    with pytest.raises(images.ImageError, match="missing.jpg"):
        images.load_image_file(tmp_path / "missing.jpg", 16)


def test_decode_many_keeps_input_order_and_returns_errors(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    inputs: list = [encode(Image.new("RGB", (8, 8), colour), "PNG") for colour in colours]
    path = tmp_path / "blue.png"
    path.write_bytes(inputs.pop())
    inputs += [b"", path]
    results = images.decode_many(inputs, 4, workers=3)
    assert results[0][0, 0].tolist() == [255, 0, 0]
    assert results[1][0, 0].tolist() == [0, 255, 0]
    assert isinstance(results[2], images.ImageError)
    assert results[3][0, 0].tolist() == [0, 0, 255]


def test_sha256_bytes() -> None:
    assert images.sha256_bytes(b"abc").startswith("ba7816bf8f01cfea")


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_fuzzed_bytes_decode_or_raise_image_error_only(
    kind: str, jpeg_bytes: bytes, png_bytes: bytes
) -> None:
    original = np.frombuffer(jpeg_bytes if kind == "jpeg" else png_bytes, dtype=np.uint8)
    rng = np.random.default_rng(1234)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(100):
        mutated = original.copy()
        positions = rng.integers(0, len(mutated), size=rng.integers(1, 9))
        mutated[positions] = rng.integers(0, 256, size=len(positions), dtype=np.uint8)
        data = mutated.tobytes()
        if rng.random() < 0.3:
            data = data[: rng.integers(0, len(data))]
        try:
            assert images.decode_image(data).mode == "RGB"
            outcomes["decoded"] += 1
        except images.ImageError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0  # the mutations did reach the decoder


# --- zip extraction -------------------------------------------------------------------------


def make_zip(members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = 0o120777 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def test_zip_extracts_images_and_csv_and_skips_the_rest(tmp_path: Path, jpeg_bytes) -> None:
    archive = make_zip(
        {
            "set/benign/a.jpg": jpeg_bytes,
            "set/metadata.csv": b"image_name,target\na,0\n",
            "set/readme.txt": b"hello",
            "set/inner.zip": make_zip({"b.jpg": jpeg_bytes}),
            "set/tool.exe": b"MZ",
            "__MACOSX/set/._a.jpg": b"\x00\x05",
            "set/.DS_Store": b"\x00",
        }
    )
    result = images.safe_extract_zip(archive, tmp_path / "out")
    extracted = sorted(path.relative_to(tmp_path / "out").as_posix() for path in result.extracted)
    assert extracted == ["set/benign/a.jpg", "set/metadata.csv"]
    assert (tmp_path / "out/set/benign/a.jpg").read_bytes() == jpeg_bytes
    reasons = dict(result.skipped)
    assert set(reasons) == {"set/inner.zip", "set/tool.exe"}
    assert "nested archive" in reasons["set/inner.zip"]
    assert "not an image" in reasons["set/tool.exe"]
    # Operating-system litter and read-me files are left out without a warning.
    assert sorted(result.ignored) == ["__MACOSX/set/._a.jpg", "set/.DS_Store", "set/readme.txt"]


def test_one_zip_member_is_read_with_the_extraction_checks(jpeg_bytes) -> None:
    archive = make_zip({"set/a.jpg": jpeg_bytes, "set/tool.exe": b"MZ"})
    assert images.read_zip_member(archive, "set/a.jpg", len(jpeg_bytes)) == jpeg_bytes
    with pytest.raises(images.ArchiveError, match="over"):
        images.read_zip_member(archive, "set/a.jpg", len(jpeg_bytes) - 1)
    with pytest.raises(images.ArchiveError, match="not an image"):
        images.read_zip_member(archive, "set/tool.exe", 100)
    with pytest.raises(images.ArchiveError, match="no member"):
        images.read_zip_member(archive, "set/b.jpg", 100)


@pytest.mark.parametrize(
    ("name", "symlink"),
    [
        ("../evil.jpg", False),
        ("set/../../evil.jpg", False),
        ("/etc/evil.jpg", False),
        ("C:/evil.jpg", False),
        ("..\\evil.jpg", False),
        ("link.jpg", True),
    ],
)
def test_zip_with_unsafe_paths_is_refused(tmp_path: Path, name: str, symlink: bool) -> None:
    archive = make_zip({"ok.jpg": b"x", name: b"x"}, symlinks=(name,) if symlink else ())
    with pytest.raises(images.ArchiveError, match="unsafe member"):
        images.safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.jpg").exists()
    assert not list((tmp_path).rglob("ok.jpg"))


def test_zip_bomb_by_ratio_is_refused_and_cleaned_up(tmp_path: Path, jpeg_bytes) -> None:
    archive = make_zip({"a.jpg": jpeg_bytes, "bomb.png": bytes(20 * 1024 * 1024)})
    assert len(archive) < 100_000
    with pytest.raises(images.ArchiveError, match="ratio"):
        images.safe_extract_zip(archive, tmp_path / "out")
    assert list((tmp_path / "out").rglob("*.*")) == []


def test_zip_over_the_total_size_limit_is_refused(tmp_path: Path, jpeg_bytes) -> None:
    archive = make_zip({"a.jpg": jpeg_bytes, "b.jpg": jpeg_bytes})
    with pytest.raises(images.ArchiveError, match="uncompressed"):
        images.safe_extract_zip(archive, tmp_path / "out", max_total_bytes=len(jpeg_bytes))


def test_zip_with_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = make_zip({f"{index}.jpg": b"x" for index in range(5)})
    with pytest.raises(images.ArchiveError, match="members"):
        images.safe_extract_zip(archive, tmp_path / "out", max_members=4)


def test_not_a_zip_is_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(images.ArchiveError, match="not a readable zip"):
        images.safe_extract_zip(b"plain text", tmp_path / "out")


def test_the_decode_budget_keeps_large_images_from_decoding_together():
    import threading
    import time

    budget = images.PixelBudget(100)
    peak, lock = [0], threading.Lock()

    def decode(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                peak[0] = max(peak[0], budget.in_use)
            time.sleep(0.01)

    threads = [threading.Thread(target=decode, args=(60,)) for _ in range(6)]
    threads.append(threading.Thread(target=decode, args=(500,)))  # over the budget: alone
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 100 and budget.in_use == 0


def test_sixteen_bit_grey_scales_exactly_as_rounding_v_over_257():
    values = np.arange(0, 65536, 7, dtype=np.uint16)[:9000].reshape(90, 100)
    for image in (
        Image.frombytes("I;16", (100, 90), values.tobytes()),
        Image.fromarray(values.astype(np.int32)),
    ):
        expected = np.rint(values / 257.0).astype(np.uint8)
        converted = np.asarray(images.to_rgb(image))
        assert converted.shape == (90, 100, 3) and (converted[..., 1] == expected).all()


@pytest.fixture
def converted_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image converted to RGB from here on."""
    sizes = []
    original_to_rgb = images.to_rgb

    def spy(image: Image.Image) -> Image.Image:
        sizes.append(image.size)
        return original_to_rgb(image)

    monkeypatch.setattr(images, "to_rgb", spy)
    return sizes


def test_a_large_sixteen_bit_scan_is_reduced_before_it_becomes_rgb(converted_sizes):
    # 2,000 px sides and a 64 px model: both sides stay >= 4 x 64 = 256, so the box factor
    # is 7 and no full-size RGB picture (or int32 copy of the scan) is ever made.
    gradient = np.tile(np.linspace(0, 65535, 2000), (2000, 1)).astype(np.uint16)
    data = encode(Image.frombytes("I;16", (2000, 2000), gradient.tobytes()), "PNG")
    decoded = images.decode_for_model(data, 64, preview=96)
    assert set(converted_sizes) == {(285, 285)}
    assert (decoded.width, decoded.height) == (2000, 2000)
    assert decoded.array.shape == (64, 64, 3) and decoded.preview.size == (96, 96)
    # The reduction is an average: the model input is still the scan's gradient.
    expected = np.rint(np.linspace(0, 255, 64)).astype(int)
    assert np.abs(decoded.array[32, :, 0].astype(int) - expected).max() <= 3


def test_images_too_small_to_reduce_give_the_same_model_input_as_before(photo, jpeg_bytes):
    # Up to 4 x the input size nothing is reduced: the input is the plain resize of the decode.
    for size in (16, 224):
        decoded = images.decode_for_model(jpeg_bytes, size)
        expected = images.resize_for_model(images.decode_image(jpeg_bytes), size)
        assert (decoded.array == expected).all() and decoded.preview is None


def test_large_jpeg_is_decoded_at_reduced_scale_for_the_model(converted_sizes):
    data = encode(Image.new("RGB", (1600, 1200), (30, 160, 90)), "JPEG", quality=95)
    decoded = images.decode_for_model(data, 32)
    # Draft mode decodes at 1/8 (200 x 150, both sides >= 128); 150 // 128 gives no box step.
    assert set(converted_sizes) == {(200, 150)}
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert np.abs(decoded.array.astype(int) - (30, 160, 90)).max() <= 3


def test_palette_images_become_rgb_before_they_are_averaged():
    # Alternating columns of palette entries 0 (black) and 1 (white): averaging the indices
    # would give entry 0 or 1 again, averaging the colours gives mid grey.
    stripes = Image.new("P", (1000, 1000), 0)
    stripes.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    stripes.putdata([column % 2 for _ in range(1000) for column in range(1000)])
    array = images.decode_for_model(encode(stripes, "PNG"), 32).array
    assert np.abs(array.astype(int) - 128).max() <= 2


def test_a_reduced_photo_keeps_its_exif_orientation_and_shown_size():
    wide = Image.new("RGB", (1200, 600), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 600, 600))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = images.decode_for_model(encode(wide, "JPEG", quality=95, exif=exif), 16)
    assert (decoded.width, decoded.height) == (600, 1200)
    # The stored left half is the top once rotated clockwise.
    assert decoded.array[2, 8, 0] > 200 and decoded.array[13, 8, 0] < 50

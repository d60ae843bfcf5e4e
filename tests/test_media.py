"""anomalake.pipelines.features.decoding: image decoding and validation, text normalising, folder and CSV/TSV
readers."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomalake.pipelines.features.decoding import (
    IMAGE_REASONS,
    TEXT_REASONS,
    ImageSpec,
    decode_image,
    decode_images,
    encode_png,
    normalize_text,
    read_image_folder,
    read_text_file,
)

GREY = ImageSpec(height=28, width=28, channels=1)
RGB = ImageSpec(height=8, width=6, channels=3)
CONVERTING_RGB = ImageSpec(height=8, width=6, channels=3, convert_channels=True)


def grey_pixels(seed: int = 0, shape=(28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def pillow_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR width/height replaced and the chunk CRC recomputed (a valid header, tiny data)."""
    assert png[12:16] == b"IHDR"
    body = png[16:29]  # width, height, depth, colour type, compression, filter, interlace
    body = struct.pack(">II", width, height) + body[8:]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return png[:16] + body + crc + png[33:]


def test_reason_tables_hold_the_required_codes():
    assert {"null_image", "corrupt_image", "image_too_large", "wrong_size", "wrong_channels"} <= IMAGE_REASONS.keys()
    assert {"null_text", "empty_text"} <= TEXT_REASONS.keys()


def test_grey_round_trip_is_exact():
    a = grey_pixels()
    pixels, reason = decode_image(encode_png(a), GREY)
    assert reason is None
    assert pixels.dtype == np.float32 and pixels.shape == (28, 28, 1)
    np.testing.assert_array_equal(pixels, (a[..., None] / 255).astype(np.float32))
    assert encode_png(a[..., None]) == encode_png(a)


def test_rgb_round_trip_is_exact():
    a = np.random.default_rng(1).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    pixels, reason = decode_image(encode_png(a), RGB)
    assert reason is None and pixels.shape == (8, 6, 3)
    np.testing.assert_array_equal(pixels, (a / 255).astype(np.float32))


def test_encode_png_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))


def test_other_size_is_wrong_size_unless_resize():
    png = encode_png(grey_pixels(shape=(32, 30)))
    assert decode_image(png, GREY) == (None, "wrong_size")
    pixels, reason = decode_image(png, ImageSpec(28, 28, 1, resize=True))
    assert reason is None and pixels.shape == (28, 28, 1)
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0


def test_resize_keeps_a_constant_image_constant():
    png = encode_png(np.full((50, 40, 3), 200, dtype=np.uint8))
    pixels, reason = decode_image(png, ImageSpec(10, 12, 3, resize=True))
    assert reason is None and pixels.shape == (10, 12, 3)
    np.testing.assert_array_equal(pixels, np.float32(200) / np.float32(255))


def test_grey_and_colour_convert_to_the_table_channels():
    grey = grey_pixels(shape=(8, 6))
    assert decode_image(encode_png(grey), RGB) == (None, "wrong_channels")  # unless the table converts
    pixels, reason = decode_image(encode_png(grey), CONVERTING_RGB)
    assert reason is None and pixels.shape == (8, 6, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], grey / np.float32(255))
    red = np.zeros((28, 28, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert decode_image(encode_png(red), GREY) == (None, "wrong_channels")
    pixels, reason = decode_image(encode_png(red), ImageSpec(28, 28, 1, convert_channels=True))
    assert reason is None and pixels.shape == (28, 28, 1)
    assert np.allclose(pixels, 76 / 255)  # Pillow's ITU-R 601-2 luma of pure red


def test_alpha_and_palette_images_drop_alpha_without_warnings():
    rgba = Image.new("RGBA", (6, 8), (10, 20, 30, 0))
    palette = Image.new("P", (6, 8), 3)
    palette.info["transparency"] = bytes(range(256))  # byte transparency: Pillow warns on a direct convert
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, reason = decode_image(pillow_bytes(rgba), CONVERTING_RGB)
        assert reason is None
        np.testing.assert_array_equal(pixels[0, 0], np.array([10, 20, 30], dtype=np.float32) / np.float32(255))
        for spec in (RGB, ImageSpec(8, 6, 1), ImageSpec(8, 6, 1, convert_channels=True)):
            pixels, reason = decode_image(pillow_bytes(palette), spec)
            assert reason is None and pixels.shape == (8, 6, spec.channels)


def test_jpeg_decodes():
    jpeg = pillow_bytes(Image.new("RGB", (6, 8), (120, 60, 30)), "JPEG")
    pixels, reason = decode_image(jpeg, RGB)
    assert reason is None and np.allclose(pixels[0, 0] * 255, [120, 60, 30], atol=3)


def test_sixteen_bit_grey_is_wrong_channels():
    deep = Image.fromarray(np.full((28, 28), 40000, dtype=np.uint16))
    assert deep.mode.startswith("I")
    assert decode_image(pillow_bytes(deep), GREY) == (None, "wrong_channels")


def test_missing_corrupt_and_truncated_images():
    assert decode_image(None, GREY) == (None, "null_image")
    assert decode_image(b"", GREY) == (None, "null_image")
    assert decode_image(float("nan"), GREY) == (None, "null_image")
    assert decode_image(np.random.default_rng(2).bytes(500), GREY) == (None, "corrupt_image")
    png = encode_png(grey_pixels())
    assert decode_image(png[: len(png) // 2], GREY) == (None, "corrupt_image")
    assert decode_image(png[:20], GREY) == (None, "corrupt_image")


def test_png_bomb_is_rejected_from_its_header():
    bomb = with_ihdr_size(encode_png(grey_pixels(shape=(2, 2))), 100_000, 100_000)
    assert struct.unpack(">I", bomb[29:33])[0] == zlib.crc32(bomb[12:29])  # a header with a valid CRC
    with pytest.raises(Image.DecompressionBombError):  # Pillow parses it, and only its own guard stops it
        Image.open(io.BytesIO(bomb))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert decode_image(bomb, ImageSpec(28, 28, 1, resize=True)) == (None, "image_too_large")
            # Above our limit too: Pillow's own guard (DecompressionBombError) is mapped to the same reason.
            huge = ImageSpec(28, 28, 1, resize=True, max_pixels=10**11)
            assert decode_image(bomb, huge) == (None, "image_too_large")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 50 * 1024 * 1024


def test_declared_size_is_checked_before_decoding():
    # 5000 x 5000 is under Pillow's own limit but over ours: decoding it would fail as truncated
    # ("corrupt_image"), so "image_too_large" shows that the declared size was checked first.
    big = with_ihdr_size(encode_png(grey_pixels(shape=(2, 2))), 5000, 5000)
    assert decode_image(big, ImageSpec(28, 28, 1, resize=True, max_pixels=1_000_000)) == (None, "image_too_large")
    assert decode_image(big, ImageSpec(28, 28, 1, resize=True, max_pixels=10**8)) == (None, "corrupt_image")
    # Between Pillow's warning and error limits: its warning becomes "image_too_large", never printed.
    warn_zone = with_ihdr_size(encode_png(grey_pixels(shape=(2, 2))), 10_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = ImageSpec(28, 28, 1, resize=True, max_pixels=10**9)
        assert decode_image(warn_zone, spec) == (None, "image_too_large")


def test_max_bytes_rejects_before_opening():
    png = encode_png(grey_pixels())
    assert decode_image(png, ImageSpec(28, 28, 1, max_bytes=len(png) - 1)) == (None, "image_too_large")
    assert decode_image(png, ImageSpec(28, 28, 1, max_bytes=len(png)))[1] is None
    assert decode_image(b"x" * 100, ImageSpec(28, 28, 1, max_bytes=10)) == (None, "image_too_large")


def test_image_spec_is_validated():
    with pytest.raises(ValueError, match="channels"):
        ImageSpec(28, 28, 2)
    with pytest.raises(ValueError, match="height"):
        ImageSpec(0, 28, 1)


def test_decode_images_batch():
    a, b = grey_pixels(3), grey_pixels(4)
    values = [encode_png(a), None, b"junk", encode_png(grey_pixels(shape=(5, 5))), encode_png(b)]
    out, reasons = decode_images(values, GREY)
    assert out.shape == (5, 784) and out.dtype == np.float32
    assert reasons == [None, "null_image", "corrupt_image", "wrong_size", None]
    np.testing.assert_array_equal(out[0], (a.reshape(-1) / 255).astype(np.float32))
    np.testing.assert_array_equal(out[4], (b.reshape(-1) / 255).astype(np.float32))
    assert not out[1:4].any()
    series_out, series_reasons = decode_images(pd.Series(values, dtype=object), GREY)
    np.testing.assert_array_equal(series_out, out)
    assert series_reasons == reasons
    empty, none = decode_images([], RGB)
    assert empty.shape == (0, 144) and none == []


def test_normalize_text():
    assert normalize_text(None, 10) == (None, "null_text")
    assert normalize_text(float("nan"), 10) == (None, "null_text")
    assert normalize_text("", 10) == (None, "empty_text")
    assert normalize_text("   \t\n ", 10) == (None, "empty_text")
    assert normalize_text("\x00\x07\x7f", 10) == (None, "empty_text")
    assert normalize_text("  Hello,\t\n world\x00!\x1b  ", 100) == ("Hello, world!", None)
    assert normalize_text("a \x00 b", 100) == ("a b", None)
    assert normalize_text("x" * 50, 20) == ("x" * 20, None)
    assert normalize_text("abc def", 4) == ("abc", None)  # no trailing space left by the cut
    decomposed = "Cafe\u0301"
    assert normalize_text(decomposed, 100) == ("Caf\u00e9", None)
    assert normalize_text("Cafe\u0301", 4) == ("Caf\u00e9", None)  # cut counts NFC characters
    assert normalize_text("🙂 ok", 10) == ("🙂 ok", None)
    with pytest.raises(ValueError):
        normalize_text("text", 0)


def test_read_image_folder(tmp_path):
    for rel, seed in (("cats/b.png", 1), ("cats/A.PNG", 2), ("dogs/x/deep.jpg", 3), ("loose.gif", 4)):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey_pixels(seed, (4, 4))).save(path, format=path.suffix[1:].upper().replace("JPG", "JPEG"))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("no extension")
    table = read_image_folder(tmp_path)
    assert list(table.columns) == ["image_id", "image", "label"]
    assert list(table["image_id"]) == ["cats/A.PNG", "cats/b.png", "dogs/x/deep.jpg", "loose.gif"]
    assert list(table["label"]) == ["cats", "cats", "dogs", None]
    assert table["image"][1] == (tmp_path / "cats" / "b.png").read_bytes()
    pd.testing.assert_frame_equal(read_image_folder(tmp_path), table)
    assert all(decode_image(data, ImageSpec(4, 4, 1))[1] is None for data in table["image"])


def test_read_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as missing:
        read_image_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(missing.value)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no image file") as empty:
        read_image_folder(tmp_path)
    assert str(tmp_path) in str(empty.value)


def test_read_text_file_tsv(tmp_path):
    src = tmp_path / "sms.tsv"
    src.write_text('label\ttext\nham\tHe said "hi\nspam\tWIN, now; call\nham\tNA\nham\t\n', encoding="utf-8")
    table = read_text_file(src, "text", label_column="label")
    assert list(table.columns) == ["message_id", "text", "label"]
    assert list(table["message_id"]) == ["00000000", "00000001", "00000002", "00000003"]
    assert list(table["text"]) == ['He said "hi', "WIN, now; call", "NA", None]
    assert list(table["label"]) == ["ham", "spam", "ham", "ham"]


def test_read_text_file_csv(tmp_path):
    src = tmp_path / "reviews.csv"
    src.write_text('\ufeffid,body,extra\n7,"Good, very good",1\n12,"Said ""no""",2\n', encoding="utf-8")
    table = read_text_file(src, "body", id_column="id")
    assert list(table["message_id"]) == ["7", "12"]
    assert list(table["text"]) == ["Good, very good", 'Said "no"']
    assert list(table["label"]) == [None, None]
    semicolons = tmp_path / "export.txt"
    semicolons.write_text("text;label\nhello, there;a\n", encoding="utf-8")
    assert read_text_file(semicolons, "text", "label")[["text", "label"]].values.tolist() == [["hello, there", "a"]]


def test_read_text_file_missing_column(tmp_path):
    src = tmp_path / "sms.tsv"
    src.write_text("label\ttext\nham\thello\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_text_file(src, "message", label_column="label")
    message = str(error.value)
    assert str(src) in message and "'message'" in message and "['label', 'text']" in message
    with pytest.raises(ValueError, match="'id'"):
        read_text_file(src, "text", id_column="id")
    with pytest.raises(ValueError, match="does not exist"):
        read_text_file(tmp_path / "none.csv", "text")

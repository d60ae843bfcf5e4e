"""Decoding and validation of image and text tables: raw values in, model-ready arrays or a reason code out.

Pure functions (numpy, pandas, Pillow): pandas UDFs call them row by row or batch by batch. A bad row never
raises; it yields (None, reason) with a code of IMAGE_REASONS / TEXT_REASONS so the job can quarantine it.
Only a wrong argument (a bad ImageSpec, max_chars < 1, a missing folder or column) raises ValueError.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

IMAGE_REASONS: dict[str, str] = {
    "null_image": "no image bytes (null or empty value)",
    "corrupt_image": "not a decodable image (unknown format, truncated or damaged data)",
    "image_too_large": "declared pixel count or byte size above the limit (rejected before decoding)",
    "wrong_size": "height/width differ from the table's and resize is off",
    "wrong_channels": "pixel mode that cannot be converted to grey or RGB sensibly (e.g. 16-bit or float)",
}
TEXT_REASONS: dict[str, str] = {
    "null_text": "no text (null value)",
    "empty_text": "nothing left after normalising (empty, blank or control characters only)",
    "oversize_record": "the raw text is longer than the table's max_record_chars (not a message; an export gone wrong)",
}

# Formats Pillow may try: the common raster ones. An allow-list keeps exotic plugins (EPS runs Ghostscript,
# and so on) away from untrusted bytes.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
# Modes that convert to "L" / "RGB" without losing meaning. 16-bit and float modes ("I;16", "I", "F") do
# convert in Pillow, but by clipping at 255 rather than scaling, so they are "wrong_channels" instead.
_PALETTE_MODES = frozenset({"P", "PA"})
_GREY_MODES = frozenset({"1", "L", "LA"})
_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}) | _PALETTE_MODES
# Control characters (Unicode Cc) that are not whitespace: whitespace controls (\t \n \r \x0b \x0c \x1c-\x1f
# \x85) separate words, so they are collapsed to a space instead of removed.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_WHITESPACE = re.compile(r"\s+")
TEXT_ID_WIDTH = 8  # fixed, so a row's message_id does not change when the file grows past a power of ten


@dataclass(frozen=True)
class ImageSpec:
    """The shape an image table's rows must decode to, and the limits checked before decoding."""

    height: int
    width: int
    channels: int  # 1 (grey) or 3 (RGB)
    resize: bool = False  # True: any size is resized (bilinear); False: another size is "wrong_size"
    convert_channels: bool = False  # True: grey <-> colour converted; False: the other kind is "wrong_channels"
    max_pixels: int = 16_777_216  # declared width * height above this is "image_too_large"
    max_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"ImageSpec.channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        for name in ("height", "width", "max_pixels", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageSpec.{name} must be positive, got {getattr(self, name)}")

    @property
    def mode(self) -> str:
        """The Pillow mode rows are converted to."""
        return "L" if self.channels == 1 else "RGB"


def _missing(value) -> bool:
    """True for None, pandas NA and float NaN (what a null cell becomes in pandas)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def decode_image(data: bytes | None, spec: ImageSpec) -> tuple[np.ndarray | None, str | None]:
    """(float32 array (height, width, channels) scaled to [0, 1], None) or (None, reason)."""
    if _missing(data) or len(data) == 0:
        return None, "null_image"
    if len(data) > spec.max_bytes:
        return None, "image_too_large"
    # Per-row warnings (EXIF, palette transparency, ...) would flood executor logs: silence them, but turn
    # Pillow's own bomb warning into an error so it becomes "image_too_large". Note: catch_warnings swaps
    # the process-wide filters, fine for Spark's one-thread-per-worker UDFs, not for threads sharing them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(data, spec)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return None, "image_too_large"
        except Exception:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
            return None, "corrupt_image"


def _decode(data: bytes, spec: ImageSpec) -> tuple[np.ndarray | None, str | None]:
    """decode_image's body; exceptions are mapped to reasons by the caller."""
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
        # Image.open has read the header only: check the declared size before any pixel is allocated.
        width, height = im.size
        if width * height > spec.max_pixels:
            return None, "image_too_large"
        if im.mode not in _CONVERTIBLE_MODES:
            return None, "wrong_channels"
        if (
            not spec.convert_channels
            and im.mode not in _PALETTE_MODES
            and (1 if im.mode in _GREY_MODES else 3) != spec.channels
        ):
            return None, "wrong_channels"  # a palette image may be either: its colours decide, so it is converted
        if not spec.resize and (height, width) != (spec.height, spec.width):
            return None, "wrong_size"  # also before decoding: no need to read pixels of a rejected row
        im.load()  # raises on truncated or damaged data (LOAD_TRUNCATED_IMAGES stays off)
        # Palette images go through RGBA: converting them straight to L/RGB warns about byte transparency.
        img = im.convert("RGBA") if im.mode in _PALETTE_MODES else im
        img = img.convert(spec.mode) if img.mode != spec.mode else img  # drops alpha, grey <-> RGB
        if (height, width) != (spec.height, spec.width):
            img = img.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8).reshape(spec.height, spec.width, spec.channels)
    # Division, not multiplication by 1/255, so that k / 255 is the correctly rounded float32 of each level.
    return pixels.astype(np.float32) / np.float32(255), None


def decode_images(values: Sequence[bytes | None], spec: ImageSpec) -> tuple[np.ndarray, list[str | None]]:
    """Batch form: (array (n, height*width*channels) float32 with zeros for failed rows, reasons per row)."""
    out = np.zeros((len(values), spec.height * spec.width * spec.channels), dtype=np.float32)
    reasons: list[str | None] = []
    for row, value in enumerate(values):
        pixels, reason = decode_image(value, spec)
        if pixels is not None:
            out[row] = pixels.reshape(-1)
        reasons.append(reason)
    return out, reasons


def normalize_text(
    text: str | None, max_chars: int, max_record_chars: int = 1_000_000
) -> tuple[str | None, str | None]:
    """(text with Unicode NFC, control characters removed, whitespace runs collapsed to one space, stripped, cut to
    max_chars, None) or (None, reason)."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if _missing(text):
        return None, "null_text"
    if len(str(text)) > max_record_chars:
        return None, "oversize_record"
    # Controls go first, so "a \x00 b" collapses to "a b"; NFC neither adds controls nor whitespace.
    cleaned = unicodedata.normalize("NFC", _WHITESPACE.sub(" ", _CONTROL.sub("", str(text))).strip())
    cleaned = cleaned[:max_chars].rstrip()  # a cut may end on the space between two words
    if not cleaned:
        return None, "empty_text"
    return cleaned, None


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array (h, w) or (h, w, 1) grey or (h, w, 3) RGB (for generators and the MNIST import)."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"encode_png needs shape (h, w), (h, w, 1) or (h, w, 3), got {np.asarray(pixels).shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_image_folder(src: Path) -> pd.DataFrame:
    """One row per image file under `src` (png, jpg, jpeg, bmp, gif, any case; sorted): image_id, image, label.

    image_id is the path relative to src with '/' separators, image the file's raw bytes, label the first
    sub-folder's name (None for files directly in src). Other files are ignored; order is by image_id. Raises
    ValueError naming the folder when it does not exist or holds no image file.
    """
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src}: image folder does not exist")
    files = sorted(
        (path.relative_to(src).as_posix(), path)
        for path in src.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not files:
        raise ValueError(f"{src}: no image file ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the folder")
    return pd.DataFrame(
        {
            "image_id": [rel for rel, _ in files],
            "image": [path.read_bytes() for _, path in files],
            "label": [rel.split("/")[0] if "/" in rel else None for rel, _ in files],
        }
    )


def _delimiter(src: Path) -> str:
    """Tab for .tsv/.tab, else what csv.Sniffer finds in the header line (',' when it cannot tell)."""
    if src.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    with src.open(encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    if not header.strip():
        raise ValueError(f"{src}: empty file, a header row is required")
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:  # a one-column header has no delimiter to find
        return ","


def read_text_file(
    src: Path, text_column: str, label_column: str | None = None, id_column: str | None = None
) -> pd.DataFrame:
    """Rows of a CSV or TSV file with a header row: columns message_id, text, label.

    message_id is id_column's values as str, else the 0-based row number zero-padded to TEXT_ID_WIDTH digits;
    label is None when there is no label_column; empty cells are None. Raises ValueError naming the file and
    the missing column (listing the columns found) when text_column/label_column/id_column is absent.
    """
    src = Path(src)
    if not src.is_file():
        raise ValueError(f"{src}: text file does not exist")
    delimiter = _delimiter(src)
    table = pd.read_csv(
        src,
        sep=delimiter,
        dtype=str,
        encoding="utf-8-sig",  # drops a BOM, which would otherwise glue itself to the first column name
        keep_default_na=False,  # a message "NA" or "null" is text; only an empty cell is missing
        na_values=[""],
        # TSV has no quoting (fields cannot hold tabs): a lone '"' in a message must not swallow lines.
        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
    )
    for role, column in (("text_column", text_column), ("label_column", label_column), ("id_column", id_column)):
        if column is not None and column not in table.columns:
            raise ValueError(f"{src}: {role} {column!r} not found; columns found: {list(table.columns)}")
    table = table.astype(object).where(table.notna(), None)
    ids = table[id_column] if id_column else [f"{row:0{TEXT_ID_WIDTH}d}" for row in range(len(table))]
    return pd.DataFrame(
        {
            "message_id": list(ids),
            "text": list(table[text_column]),
            "label": list(table[label_column]) if label_column else [None] * len(table),
        }
    )

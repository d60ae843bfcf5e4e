"""Readers of the labelled public datasets (the formats of ../shared/datasets) and their one-class protocols.

Labels are returned for measuring only; nothing here trains or thresholds on them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomalake.pipelines.config import TableConfig
from anomalake.pipelines.features.decoding import encode_png


class DatasetError(ValueError):
    """A dataset folder is missing or not in the expected format."""


@dataclass(frozen=True)
class OneClassSplit:
    """Training samples (normal only) and test samples with labels (1 = anomalous) for one normal class."""

    group: str
    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(
            f"{path} does not exist: expected {what} (point --data or ANOMALAKE_DATASETS at a folder in this format)"
        )
    return path


def sliding_windows(values: np.ndarray, length: int) -> np.ndarray:
    """All windows of `length` consecutive rows, stride 1: shape (n - length + 1, length, n_columns)."""
    index = np.arange(length)[None, :] + np.arange(len(values) - length + 1)[:, None]
    return values[index].astype(np.float32)


def asd_entities(root: Path) -> list[str]:
    """The entity names of a folder in ASD's layout (omi-1 ... omi-12; SMD's machine-1-1 ...) in numeric order."""
    folder = _require(Path(root) / "npy", "ASD's npy/<entity>_{train,test,test_label}.npy files")
    names = [p.name.removesuffix("_train.npy") for p in folder.glob("*_train.npy")]
    if not names:
        raise DatasetError(f"{folder}: no *_train.npy file")
    return sorted(names, key=_numeric_order)


def _numeric_order(name: str) -> list[tuple]:
    """machine-1-2 before machine-1-10: the dash-separated parts, numbers compared as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("-")]


def load_asd_series(root: Path, entity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One entity's `_train` steps, `_test` steps (both (steps, metrics), any number of metrics, the same in
    both: ASD has 19, the Server Machine Dataset 38) and test labels (steps,) of 0/1."""
    folder = Path(root) / "npy"
    train = np.load(_require(folder / f"{entity}_train.npy", "an array (steps, metrics)"), allow_pickle=False)
    test = np.load(_require(folder / f"{entity}_test.npy", "an array (steps, metrics)"), allow_pickle=False)
    labels = np.load(_require(folder / f"{entity}_test_label.npy", "an array (steps,) of 0/1"), allow_pickle=False)
    if train.ndim != 2 or train.shape[1] < 1 or len(train) == 0:
        raise DatasetError(f"{folder}/{entity}_train.npy: expected shape (steps, metrics), found {train.shape}")
    if test.ndim != 2 or test.shape[1] != train.shape[1]:
        raise DatasetError(
            f"{folder}/{entity}_test.npy: expected shape (steps, {train.shape[1]}) like {entity}_train.npy, "
            f"found {test.shape}"
        )
    if labels.shape != (len(test),):
        raise DatasetError(f"{folder}/{entity}_test_label.npy: expected shape ({len(test)},), found {labels.shape}")
    return train, test, labels.astype(int)


def load_asd(root: Path, entity: str, window: int) -> OneClassSplit:
    """ASD windows: train on `_train`; test windows of `_test`, each labelled by its last step."""
    train, test, labels = load_asd_series(root, entity)
    return OneClassSplit(entity, sliding_windows(train, window), sliding_windows(test, window), labels[window - 1 :])


def load_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (n, 28, 28, 1) scaled to [0, 1] and their digits, from mnist_5k.csv.gz."""
    path = _require(Path(root) / "mnist_5k.csv.gz", "784 pixel columns then the label, no header")
    table = pd.read_csv(path, header=None).to_numpy()
    if table.shape[1] != 785:
        raise DatasetError(f"{path}: expected 785 columns (784 pixels, label), found {table.shape[1]}")
    return (table[:, :784] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32), table[:, 784].astype(int)


def one_class_split(samples: np.ndarray, classes: np.ndarray, normal, seed: int = 0) -> OneClassSplit:
    """Half of the normal class (seeded) for training; the rest of the set, labelled 1 unless normal, for testing."""
    rng = np.random.default_rng(seed)
    normal_index = rng.permutation(np.flatnonzero(classes == normal))
    train_index = np.sort(normal_index[: len(normal_index) // 2])
    test_mask = np.ones(len(samples), dtype=bool)
    test_mask[train_index] = False
    return OneClassSplit(
        str(normal), samples[train_index], samples[test_mask], (classes[test_mask] != normal).astype(int)
    )


def load_sms(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """SMS messages (object array of str) and labels ('ham' or 'spam') from SMSSpamCollection."""
    path = _require(Path(root) / "SMSSpamCollection", "tab-separated label<TAB>text lines")
    table = pd.read_csv(path, sep="\t", header=None, names=["label", "text"], quoting=csv.QUOTE_NONE, dtype=str)
    if not set(table["label"]) <= {"ham", "spam"}:
        raise DatasetError(f"{path}: expected labels ham/spam, found {sorted(set(table['label']))[:5]}")
    return table["text"].fillna("").to_numpy(dtype=object), table["label"].to_numpy(dtype=object)


@dataclass(frozen=True)
class LabelledSeries:
    """One series of a benchmark: its rows (timestamp + value columns), per-row labels and labelled windows.

    `group` is its path under the data folder (e.g. realTweets/Twitter_volume_AAPL.csv), `category` its
    folder; `train` is its own normal data where the benchmark has one (SKAB), else None (NAB trains on
    the series itself).
    """

    group: str
    category: str
    frame: pd.DataFrame
    labels: np.ndarray
    windows: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]


def _read_csv(path: Path, expected: str, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not readable as {expected}: {str(error).splitlines()[0]}") from None


def _timestamps(frame: pd.DataFrame, column: str, path: Path, expected: str) -> pd.Series:
    if column not in frame.columns:
        raise DatasetError(f"{path}: expected {expected}, found columns {list(frame.columns)[:10]}")
    stamps = pd.to_datetime(frame[column], errors="coerce")
    if stamps.isna().any():
        raise DatasetError(
            f"{path}: column '{column}' has {int(stamps.isna().sum())} values that are not timestamps (row "
            f"{int(stamps.isna().idxmax()) + 2})"
        )
    return stamps


def _labels_in(stamps: pd.Series, windows: list[tuple[pd.Timestamp, pd.Timestamp]]) -> np.ndarray:
    labels = np.zeros(len(stamps), dtype=int)
    for start, end in windows:
        labels[((stamps >= start) & (stamps <= end)).to_numpy()] = 1
    return labels


def load_nab(root: Path, categories: list[str] | None = None) -> list[LabelledSeries]:
    """NAB: data/<category>/<name>.csv (timestamp,value) labelled by labels/combined_windows.json."""
    root = Path(root)
    expected = "NAB's data/<category>/<series>.csv files and labels/combined_windows.json"
    label_path = _require(
        root / "labels" / "combined_windows.json",
        'NAB\'s anomaly windows: {"<category>/<file>.csv": [[start, end], ...]}',
    )
    try:
        all_windows = json.loads(label_path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(
            f'{label_path}: not JSON ({error}); expected {{"<category>/<file>.csv": [[start, end], ...]}}'
        ) from None
    if not isinstance(all_windows, dict):
        raise DatasetError(f"{label_path}: expected an object mapping '<category>/<file>.csv' to lists of [start, end]")
    files = sorted(_require(root / "data", expected).glob("*/*.csv"))
    if categories:  # categories or <category>/<series>.csv names
        files = [f for f in files if f.parent.name in categories or f"{f.parent.name}/{f.name}" in categories]
    if not files:
        raise DatasetError(
            f"{root / 'data'}: no <category>/<series>.csv file"
            + (f" in categories or series {categories}" if categories else "")
            + f"; expected {expected}"
        )
    series = []
    for path in files:
        key = f"{path.parent.name}/{path.name}"
        if key not in all_windows:
            raise DatasetError(
                f"{label_path}: no entry for {key} (every data file needs one, [] when it has no anomaly)"
            )
        frame = _read_csv(path, "a CSV with columns timestamp,value")
        stamps = _timestamps(frame, "timestamp", path, "columns timestamp,value")
        if "value" not in frame.columns or not pd.api.types.is_numeric_dtype(frame["value"]):
            raise DatasetError(
                f"{path}: expected a numeric column 'value', found columns {list(frame.columns)} "
                f"({frame.dtypes.to_dict()})"
            )
        windows = tuple((pd.Timestamp(a), pd.Timestamp(b)) for a, b in all_windows[key])
        frame = pd.DataFrame({"timestamp": stamps, "value": frame["value"].astype(float)})
        series.append(LabelledSeries(key, path.parent.name, frame, _labels_in(stamps, list(windows)), windows))
    return series


SKAB_FEATURES = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


def _read_skab(path: Path, labelled: bool) -> pd.DataFrame:
    expected = f"';'-separated columns datetime;{';'.join(SKAB_FEATURES)}" + (
        ";anomaly;changepoint" if labelled else ""
    )
    frame = _read_csv(path, expected, sep=";")
    stamps = _timestamps(frame, "datetime", path, expected)
    wanted = list(SKAB_FEATURES) + (["anomaly"] if labelled else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; expected {expected}")
    out = frame[wanted].astype(float)
    out.insert(0, "timestamp", stamps)
    return out


def load_skab(root: Path) -> tuple[pd.DataFrame, list[LabelledSeries]]:
    """SKAB: the anomaly-free run (for training) and every labelled run, group = its path under data/."""
    data = _require(Path(root) / "data", "SKAB's data/anomaly-free/anomaly-free.csv and data/<folder>/<n>.csv")
    free = _read_skab(_require(data / "anomaly-free" / "anomaly-free.csv", "SKAB's anomaly-free run"), labelled=False)
    files = sorted(p for p in data.glob("*/*.csv") if p.parent.name != "anomaly-free")
    if not files:
        raise DatasetError(f"{data}: no labelled run <folder>/<n>.csv beside anomaly-free/")
    runs = []
    for path in sorted(files, key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else 0)):
        frame = _read_skab(path, labelled=True)
        labels = frame.pop("anomaly").to_numpy().astype(int)
        runs.append(LabelledSeries(f"{path.parent.name}/{path.name}", path.parent.name, frame, labels, ()))
    return free, runs


# --- Labelled image and text sets as raw tables (the demos and the mnist / sms benchmarks) ---------------
VERBS = ("restarted", "synced", "rotated", "paused", "resumed", "finished")
NOUNS = ("backup", "cache", "index", "queue", "node", "disk", "job", "report")


@dataclass(frozen=True)
class LabelledSet:
    """Samples (images (n, h, w, 1) in [0, 1], or strings) with their class, and where they came from."""

    samples: np.ndarray
    classes: np.ndarray
    source: str


def load_images(root: Path, seed: int = 0) -> LabelledSet:
    """MNIST when the public data is there, else generated 28 x 28 strokes (ten classes of bar angles)."""
    folder = root / "mnist_mlxtend5k"
    if folder.exists():
        images, digits = load_mnist(folder)
        return LabelledSet(images, digits.astype(str), f"MNIST 5,000 images from {folder}")
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(10), 200)
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    images = []
    for c in classes:
        angle = np.pi * c / 10 + rng.normal(0, 0.05)
        distance = np.abs(xx * np.sin(angle) - yy * np.cos(angle) + rng.normal(0, 1.0))
        images.append(np.clip(1.5 - distance / 1.5, 0, 1) * (np.hypot(xx, yy) < 11))
    return LabelledSet(
        np.stack(images)[..., None].astype(np.float32), classes.astype(str), "generated bars (no MNIST found)"
    )


def load_texts(root: Path, seed: int = 0) -> LabelledSet:
    """SMS spam when the public data is there, else generated log lines (normal) and spam-like texts."""
    folder = root / "sms_spam"
    if folder.exists():
        texts, labels = load_sms(folder)
        return LabelledSet(texts, labels, f"SMS Spam Collection from {folder}")
    rng = np.random.default_rng(seed)
    ham = [f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} at {rng.integers(1, 13)} pm" for _ in range(1500)]
    spam = [f"WIN ${rng.integers(100, 999)} now!!! call 0{rng.integers(10**8, 10**9)} txt STOP" for _ in range(200)]
    return LabelledSet(
        np.array(ham + spam, dtype=object),
        np.array(["ham"] * 1500 + ["spam"] * 200, dtype=object),
        "generated texts (no SMS data found)",
    )


def raw_frames(data: LabelledSet, table: TableConfig, normal: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training day, scored day): half of the normal class, then everything else, as raw rows with labels."""
    split = one_class_split(np.arange(len(data.samples)), data.classes, normal, seed)
    frames = []
    for index in (split.train, split.test):
        ids = [f"{'img' if table.kind == 'image' else 'msg'}-{i:05d}" for i in index]
        if table.kind == "image":
            values = [encode_png(np.round(data.samples[i, :, :, 0] * 255).astype(np.uint8)) for i in index]
        else:
            values = [str(data.samples[i]) for i in index]
        frames.append(pd.DataFrame({table.entity: ids, table.value_column: values, "label": data.classes[index]}))
    return frames[0], frames[1]

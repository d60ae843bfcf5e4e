"""Readers of the labelled public datasets (the formats of ../shared/datasets) and their one-class protocols.

Labels are returned for measuring only; nothing here trains or thresholds on them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ASD_FEATURES = 19


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
        raise DatasetError(f"{path} does not exist: expected {what} (set ANOMALAKE_DATASETS to the datasets folder)")
    return path


def sliding_windows(values: np.ndarray, length: int) -> np.ndarray:
    """All windows of `length` consecutive rows, stride 1: shape (n - length + 1, length, n_columns)."""
    index = np.arange(length)[None, :] + np.arange(len(values) - length + 1)[:, None]
    return values[index].astype(np.float32)


def asd_entities(root: Path) -> list[str]:
    """The ASD entity names (omi-1 ... omi-12) in numeric order."""
    folder = _require(Path(root) / "npy", "ASD's npy/omi-N_{train,test,test_label}.npy files")
    names = [p.name.removesuffix("_train.npy") for p in folder.glob("*_train.npy")]
    if not names:
        raise DatasetError(f"{folder}: no *_train.npy file")
    return sorted(names, key=lambda n: int(n.rsplit("-", 1)[-1]) if n.rsplit("-", 1)[-1].isdigit() else 0)


def load_asd(root: Path, entity: str, window: int) -> OneClassSplit:
    """ASD windows: train on `_train`; test windows of `_test`, each labelled by its last step."""
    folder = Path(root) / "npy"
    train = np.load(_require(folder / f"{entity}_train.npy", "an array (steps, 19)"), allow_pickle=False)
    test = np.load(_require(folder / f"{entity}_test.npy", "an array (steps, 19)"), allow_pickle=False)
    labels = np.load(_require(folder / f"{entity}_test_label.npy", "an array (steps,) of 0/1"), allow_pickle=False)
    for name, arr in (("train", train), ("test", test)):
        if arr.ndim != 2 or arr.shape[1] != ASD_FEATURES:
            raise DatasetError(f"{folder}/{entity}_{name}.npy: expected shape (steps, {ASD_FEATURES}), found {arr.shape}")
    if labels.shape != (len(test),):
        raise DatasetError(f"{folder}/{entity}_test_label.npy: expected shape ({len(test)},), found {labels.shape}")
    return OneClassSplit(entity, sliding_windows(train, window), sliding_windows(test, window), labels[window - 1 :].astype(int))


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
    return OneClassSplit(str(normal), samples[train_index], samples[test_mask], (classes[test_mask] != normal).astype(int))


def load_sms(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """SMS messages (object array of str) and labels ('ham' or 'spam') from SMSSpamCollection."""
    path = _require(Path(root) / "SMSSpamCollection", "tab-separated label<TAB>text lines")
    table = pd.read_csv(path, sep="\t", header=None, names=["label", "text"], quoting=csv.QUOTE_NONE, dtype=str)
    if not set(table["label"]) <= {"ham", "spam"}:
        raise DatasetError(f"{path}: expected labels ham/spam, found {sorted(set(table['label']))[:5]}")
    return table["text"].fillna("").to_numpy(dtype=object), table["label"].to_numpy(dtype=object)

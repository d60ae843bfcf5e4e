"""The detector contract: a frozen config in, fit / score_samples / explain / save / load out."""

from __future__ import annotations

import abc
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

from anomalake.models import registry
from anomalake.models.keras_archive import ArtifactError, load_keras_model, prescan_keras_archive

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
REGION_PARTS = 4  # an image's explanation names the cells of a REGION_PARTS x REGION_PARTS grid


class NotFittedError(RuntimeError):
    """A detector was asked to score, explain or save before it was fitted."""


@dataclass(frozen=True)
class DetectorConfig:
    """What every family needs: the shape of one sample, the names of its last axis, a seed."""

    input_shape: tuple[int, ...]
    feature_names: tuple[str, ...] = ()
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DetectorConfig":
        """Rebuild from `to_dict`'s output (or a yml's params); a key this class does not know is a ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(names))})"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class Detector(abc.ABC):
    """Base class of every detector family (scikit-learn style: config in __init__, state ends in `_`).

    A family sets `family` (its registry name), `config_class`, `input_kinds` (what it scores: "timeseries"
    windows of shape (steps, features), "image" arrays of shape (height, width, channels), "text" strings)
    and implements fit and `_score_batch`; the base class batches, validates, saves and loads.
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig
    input_kinds: ClassVar[tuple[str, ...]] = ("timeseries",)
    tiny_params: ClassVar[dict[str, Any]] = {}  # the smallest sizes that still learn (conformance tests)
    distributable: ClassVar[bool] = (
        False  # fit can run data-parallel inside anomalake.models.distributed.distributed_training
    )

    def __init__(self, config: DetectorConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    # --- the contract every family implements -------------------------------------------------
    @abc.abstractmethod
    def fit(self, train: Any, validation: Any = None) -> "Detector":
        """Learn normal behaviour from `train` (an array or a tf.data.Dataset of batches); return self."""

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """One finite float per sample; higher is more anomalous."""
        return self.score_and_explain(x)[0]

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Per-sample non-negative contributions to the score, in the shape of one input sample."""
        return self.score_and_explain(x)[1]

    def score_and_explain(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Scores and contributions from one pass over the model (what the score job calls)."""
        self._check_fitted()
        scores, contributions = [], []
        for batch in iterate_batches(x):
            samples = self.as_batch(batch)
            if len(samples):
                score, contribution = self._score_batch(samples)
                scores.append(np.asarray(score, dtype=np.float64))
                contributions.append(np.asarray(contribution, dtype=np.float64))
        if not scores:
            return np.zeros(0), np.zeros((0, *self.explanation_shape))
        return np.concatenate(scores), np.concatenate(contributions)

    @abc.abstractmethod
    def _score_batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (n,) and non-negative contributions (n, *explanation_shape) of validated samples."""

    def top_contributors(self, x: Any, k: int = 3) -> list[list[tuple[str, float]]]:
        """The short explanation that fits a table column: per sample, its k largest parts and their shares.

        Parts are metrics for windows (summed over steps), regions of a 4 x 4 grid for images
        ("rows a-b, cols c-d", summed over channels) and tokens for text.
        """
        samples = self.as_batch(x)
        names, parts = self._explanation_parts(samples, self.explain(samples))
        shares = parts / np.maximum(parts.sum(axis=1, keepdims=True), 1e-300)
        order = np.argsort(-shares, axis=1, kind="stable")[:, :k]
        return [
            [(row_names[j], round(float(share[j]), 6)) for j in top]
            for row_names, share, top in zip(names, shares, order)
        ]

    def _explanation_parts(self, samples: np.ndarray, contributions: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
        """Names (per sample) and values of the parts an explanation is summarised into."""
        n = len(samples)
        if contributions.ndim == 3:  # windows: (steps, metrics)
            names = list(self.config.feature_names) or [f"feature_{i}" for i in range(contributions.shape[2])]
            return [names] * n, contributions.sum(axis=1)
        height, width = contributions.shape[1:3]
        blocks = region_grid(height, width, REGION_PARTS)
        names = [f"rows {r[0]}-{r[-1]}, cols {c[0]}-{c[-1]}" for r, c in blocks]
        pixels = contributions.reshape(n, height, width, -1).sum(axis=3)
        return [names] * n, np.stack([pixels[:, r][:, :, c].sum(axis=(1, 2)) for r, c in blocks], axis=1)

    @property
    def explanation_shape(self) -> tuple[int, ...]:
        """Shape of one sample's explanation: the input's own shape (text families: one value per token)."""
        return tuple(self.config.input_shape)

    @classmethod
    def describe(cls) -> str:
        """The family's one-line description (its docstring's first line)."""
        return (cls.__doc__ or cls.family).strip().splitlines()[0]

    def _save_model(self, folder: Path) -> None:
        """Write the fitted Keras model into `folder` (families with more state override this)."""
        self.model_.save(folder / MODEL_FILE)

    def _load_model(self, folder: Path) -> None:
        """Read the Keras model back: the pre-scan, then safe_mode=True (no Lambda, only registered custom objects)."""
        self.model_ = load_keras_model(folder / MODEL_FILE, registered_keras_objects())

    # --- shared machinery ---------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """True once fit has run (or a fitted model was loaded)."""
        return getattr(self, "model_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() or load()")

    def as_batch(self, x: Any) -> np.ndarray:
        """Samples as float32 of shape (n, *input_shape); flattened samples are reshaped."""
        shape = tuple(self.config.input_shape)
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{self.family}: expected numeric samples of shape {shape} (float32), got dtype {arr.dtype}"
            )
        arr = arr.astype(np.float32, copy=False)
        if arr.shape[1:] == shape:
            return arr
        if arr.ndim == 2 and arr.shape[1] == int(np.prod(shape)):
            return arr.reshape((arr.shape[0], *shape))
        raise ValueError(f"{self.family}: expected samples of shape {shape}, got an array of shape {arr.shape}")

    def save(self, folder: str | Path) -> Path:
        """Write model.keras and config.json into `folder` (no pickle)."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_model(folder)
        payload = {"family": self.family, "config": self.config.to_dict()}
        (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Detector":
        """Rebuild a fitted detector from `save`'s folder; the family comes from config.json."""
        folder = Path(folder)
        payload = json.loads((folder / CONFIG_FILE).read_text())
        family = registered_family(folder, payload.get("family") if isinstance(payload, dict) else None)
        try:
            config = family.config_class.from_dict(payload["config"])
        except (ValueError, TypeError, KeyError) as error:
            raise ArtifactError(folder, f"{CONFIG_FILE} does not configure a {family.family}: {error}") from None
        detector = family(config)
        detector._load_model(folder)
        return detector


def registered_family(folder: Path, name: Any) -> type["Detector"]:
    """The registry's class for config.json's family `name` (nothing else is imported); else ArtifactError."""
    families = registry.discover()
    if not isinstance(name, str) or name not in families:
        raise ArtifactError(
            folder, f"{CONFIG_FILE} names family {name!r}, not a registered family ({', '.join(families)})"
        )
    return families[name]


def registered_keras_objects() -> frozenset[str]:
    """The names of the custom Keras objects the families register (`anomalake>...`), after discovering them all."""
    import keras

    registry.discover()
    return frozenset(keras.saving.get_custom_objects())


def prescan_model(folder: Path) -> None:
    """The pre-scan of a folder's model.keras against the registered Keras objects (ArtifactError when unsafe)."""
    prescan_keras_archive(folder / MODEL_FILE, registered_keras_objects())


def grid_blocks(size: int, parts: int) -> list[np.ndarray]:
    """Indices 0..size-1 cut into at most `parts` near-equal consecutive blocks (the one cut every image grid uses)."""
    return [block for block in np.array_split(np.arange(size), min(parts, size)) if len(block)]


def region_grid(height: int, width: int, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cells of an image cut into at most `parts` x `parts` blocks: (rows, cols) index arrays, row-major.

    One grid for the short explanation ("rows a-b, cols c-d"), the score table's top regions and its error map.
    """
    return [(r, c) for r in grid_blocks(height, parts) for c in grid_blocks(width, parts)]


def iterate_batches(data: Any) -> Iterable[np.ndarray]:
    """Yield numpy batches from an array (one batch) or from a tf.data.Dataset of batches."""
    if isinstance(data, np.ndarray):
        yield data
        return
    if isinstance(data, (str, bytes)):  # one text sample, not a sequence of characters
        yield np.array([data], dtype=object)
        return
    if isinstance(data, (list, tuple)):
        yield np.asarray(data)
        return
    for batch in data:
        yield np.asarray(batch)

"""Per-entity baselines: each entity's features are standardised by its own robust centre and scale.

Entities of one table differ in level and range (one host idles at 10 % cpu, another at 60 %); a shared
model learns their common shape far better once each is expressed in its own units, and a level shift
then shows as a shift, not as "looks like another entity". Stored as JSON beside the model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

BASELINE_FILE = "baseline.json"


@dataclass(frozen=True)
class EntityBaseline:
    """Robust centre (median) and scale (IQR / 1.349) per entity and feature."""

    features: tuple[str, ...]
    centers: Mapping[str, tuple[float, ...]]
    scales: Mapping[str, tuple[float, ...]]

    @classmethod
    def from_quartiles(cls, features: Sequence[str], quartiles: Mapping[str, np.ndarray]) -> "EntityBaseline":
        """Build from entity -> array (n_features, 3) of the 25th, 50th and 75th percentiles."""
        centers, scales = {}, {}
        for entity, q in quartiles.items():
            q = np.asarray(q, dtype=np.float64)
            center = q[:, 1]
            # A floor keeps constant features (zero IQR) finite without inflating their anomalies.
            scale = np.maximum((q[:, 2] - q[:, 0]) / 1.349, 1e-3 * np.maximum(np.abs(center), 1.0))
            centers[entity], scales[entity] = tuple(center.tolist()), tuple(scale.tolist())
        return cls(tuple(features), centers, scales)

    @classmethod
    def identity(cls) -> "EntityBaseline":
        """No per-entity scaling (images and texts: the sample is its own unit)."""
        return cls((), {}, {})

    @property
    def is_identity(self) -> bool:
        """True when samples pass unchanged and every entity is known."""
        return not self.features

    def knows(self, entities: Sequence[str]) -> np.ndarray:
        """Which of `entities` have a baseline."""
        return np.array([self.is_identity or e in self.centers for e in entities], dtype=bool)

    def transform(self, entities: Sequence[str], x: np.ndarray) -> np.ndarray:
        """Standardise samples (n, ..., n_features) of known entities by their own baseline."""
        if self.is_identity:
            return x
        center = np.array([self.centers[e] for e in entities], dtype=np.float64)
        scale = np.array([self.scales[e] for e in entities], dtype=np.float64)
        shape = (len(entities),) + (1,) * (x.ndim - 2) + (len(self.features),)
        return ((x - center.reshape(shape)) / scale.reshape(shape)).astype(np.float32)

    def merged(self, other: "EntityBaseline") -> "EntityBaseline":
        """This baseline plus the entities of `other` that it does not know (same features)."""
        if other.is_identity:
            return self
        if not self.is_identity and other.features != self.features:
            raise ValueError(f"baselines of different features: {self.features} and {other.features}")
        return EntityBaseline(other.features, {**other.centers, **self.centers}, {**other.scales, **self.scales})

    def pooled(self, entities: Sequence[str]) -> "EntityBaseline":
        """A baseline giving each of `entities` the median centre and scale of the known entities."""
        center = tuple(np.median(np.array(list(self.centers.values())), axis=0).tolist())
        scale = tuple(np.median(np.array(list(self.scales.values())), axis=0).tolist())
        return EntityBaseline(self.features, {e: center for e in entities}, {e: scale for e in entities})

    def to_json(self) -> str:
        """The baseline as a JSON string (what baseline.json holds)."""
        return json.dumps({"features": list(self.features), "centers": self.centers, "scales": self.scales}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EntityBaseline":
        """Inverse of to_json."""
        raw = json.loads(text)
        as_tuples = lambda m: {k: tuple(v) for k, v in m.items()}  # noqa: E731
        return cls(tuple(raw["features"]), as_tuples(raw["centers"]), as_tuples(raw["scales"]))

    def save(self, folder: Path) -> None:
        """Write baseline.json."""
        (folder / BASELINE_FILE).write_text(self.to_json())

    @classmethod
    def load(cls, folder: Path) -> "EntityBaseline":
        """Read baseline.json."""
        return cls.from_json((folder / BASELINE_FILE).read_text())

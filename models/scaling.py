"""Per-entity scaling: each entity's features are standardised by its own robust centre and scale.

Entities of one table differ in level and range (one host idles at 10 % cpu, another at 60 %); a shared
model learns their common shape far better once each is expressed in its own units, and a level shift
then shows as a shift, not as "looks like another entity". Stored as JSON beside the model (baseline.json, the
name artifacts have always used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

SCALING_FILE = "baseline.json"  # the file name on disk stays, so saved models keep loading


@dataclass(frozen=True)
class EntityScaling:
    """Robust centre (median) and scale (IQR / 1.349) per entity and feature."""

    features: tuple[str, ...]
    centers: Mapping[str, tuple[float, ...]]
    scales: Mapping[str, tuple[float, ...]]

    @classmethod
    def from_quartiles(cls, features: Sequence[str], quartiles: Mapping[str, np.ndarray]) -> "EntityScaling":
        """Build from entity -> array (n_features, 3) of the 25th, 50th and 75th percentiles."""
        centers, scales = {}, {}
        for entity, q in quartiles.items():
            q = np.asarray(q, dtype=np.float64)
            center = q[:, 1]
            # A floor keeps constant features (zero IQR) finite without inflating their anomalies.
            scale = np.maximum((q[:, 2] - q[:, 0]) / 1.349, 1e-3 * np.maximum(np.abs(center), 1.0))
            centers[entity], scales[entity] = tuple(center.tolist()), tuple(scale.tolist())
        return cls(tuple(features), centers, scales)

    def with_unscaled(self, feature: str) -> "EntityScaling":
        """The same scaling with one more feature that every entity keeps as it is (center 0, scale 1)."""
        return EntityScaling(
            (*self.features, feature),
            {e: (*c, 0.0) for e, c in self.centers.items()},
            {e: (*s, 1.0) for e, s in self.scales.items()},
        )

    @classmethod
    def identity(cls) -> "EntityScaling":
        """No per-entity scaling (images and texts: the sample is its own unit)."""
        return cls((), {}, {})

    @property
    def is_identity(self) -> bool:
        """True when samples pass unchanged and every entity is known."""
        return not self.features

    def knows(self, entities: Sequence[str]) -> np.ndarray:
        """Which of `entities` have a scale."""
        return np.array([self.is_identity or e in self.centers for e in entities], dtype=bool)

    def transform(self, entities: Sequence[str], x: np.ndarray) -> np.ndarray:
        """Standardise samples (n, ..., n_features) of known entities by their own centre and scale."""
        if self.is_identity:
            return x
        center = np.array([self.centers[e] for e in entities], dtype=np.float64)
        scale = np.array([self.scales[e] for e in entities], dtype=np.float64)
        shape = (len(entities),) + (1,) * (x.ndim - 2) + (len(self.features),)
        return ((x - center.reshape(shape)) / scale.reshape(shape)).astype(np.float32)

    def merged(self, other: "EntityScaling") -> "EntityScaling":
        """This scaling plus the entities of `other` that it does not know (same features)."""
        if other.is_identity:
            return self
        if not self.is_identity and other.features != self.features:
            raise ValueError(f"scalings of different features: {self.features} and {other.features}")
        return EntityScaling(other.features, {**other.centers, **self.centers}, {**other.scales, **self.scales})

    def pooled(self, entities: Sequence[str]) -> "EntityScaling":
        """A scaling giving each of `entities` the median centre and scale of the known entities."""
        center = tuple(np.median(np.array(list(self.centers.values())), axis=0).tolist())
        scale = tuple(np.median(np.array(list(self.scales.values())), axis=0).tolist())
        return EntityScaling(self.features, {e: center for e in entities}, {e: scale for e in entities})

    def to_json(self) -> str:
        """The scaling as a JSON string (what baseline.json holds)."""
        return json.dumps(
            {"features": list(self.features), "centers": self.centers, "scales": self.scales}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> "EntityScaling":
        """Inverse of to_json."""
        raw = json.loads(text)
        as_tuples = lambda m: {k: tuple(v) for k, v in m.items()}  # noqa: E731
        return cls(tuple(raw["features"]), as_tuples(raw["centers"]), as_tuples(raw["scales"]))

    def save(self, folder: Path) -> None:
        """Write baseline.json."""
        (folder / SCALING_FILE).write_text(self.to_json())

    @classmethod
    def load(cls, folder: Path) -> "EntityScaling":
        """Read baseline.json."""
        return cls.from_json((folder / SCALING_FILE).read_text())

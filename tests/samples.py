"""Tiny samples of every input kind, each with a normal class and an anomaly injected at a known place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

WORDS = ("server", "disk", "queue", "cache", "backup", "job", "node", "index")
VERBS = ("started", "finished", "restarted", "synced", "rotated", "paused")


@dataclass(frozen=True)
class Kind:
    """Tiny samples of one input kind and where an injected anomaly sits."""

    shape: tuple[int, ...]
    normal: Callable[[int, int], np.ndarray]
    anomalous: Callable[[np.ndarray], np.ndarray]
    anomaly_at: Callable[[np.ndarray], np.ndarray]  # per-sample explanation -> index of its largest part
    expected_at: int | tuple[int, ...]
    anomaly_part: str  # the short explanation's first part for an anomalous sample
    feature_names: tuple[str, ...] = ()


def normal_windows(n: int, seed: int = 0) -> np.ndarray:
    """Smooth periodic windows (16 steps, 3 metrics) plus noise."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    t = np.arange(16)[None, :, None]
    base = np.concatenate([np.sin(t / 3 + phase), np.cos(t / 3 + phase), 0.5 * np.sin(t / 3 + phase)], axis=2)
    return (base + rng.normal(0, 0.05, (n, 16, 3))).astype(np.float32)


def spiked_windows(x: np.ndarray) -> np.ndarray:
    """A spike in metric 1 at the window's last step (where every family looks hardest)."""
    x = x.copy()
    x[:, -1, 1] += 3.0
    return x


def normal_images(n: int, seed: int = 0) -> np.ndarray:
    """8x8 grey images: a vertical bar at a random column on a dark, slightly noisy background."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.05, (n, 8, 8, 1))
    columns = rng.integers(2, 6, n)
    images[np.arange(n), :, columns, 0] = rng.uniform(0.8, 1.0, (n, 1))
    return images.astype(np.float32)


def patched_images(x: np.ndarray) -> np.ndarray:
    """A bright 2x2 patch in the top-left corner, where no bar ever goes."""
    x = x.copy()
    x[:, 0:2, 0:2, 0] = 1.0
    return x


def normal_texts(n: int, seed: int = 0) -> np.ndarray:
    """Short log-like sentences from a small grammar."""
    rng = np.random.default_rng(seed)
    return np.array(
        [f"the {rng.choice(WORDS)} {rng.choice(VERBS)} at {rng.integers(1, 13)} pm" for _ in range(n)], dtype=object
    )


def odd_texts(x: np.ndarray) -> np.ndarray:
    """The third token replaced by a word no normal message has."""
    return np.array([" ".join(t.split()[:2] + ["xylophone"] + t.split()[3:]) for t in x], dtype=object)


KINDS = {
    "timeseries": Kind(
        (16, 3),
        normal_windows,
        spiked_windows,
        lambda e: np.array([e.sum(axis=1).argmax(), e.sum(axis=0).argmax()]),
        (15, 1),
        "b",
        ("a", "b", "c"),
    ),
    "image": Kind(
        (8, 8, 1),
        normal_images,
        patched_images,
        lambda e: np.array(np.unravel_index(e.sum(axis=-1).argmax(), e.shape[:2])) // 4,
        (0, 0),
        "rows 0-1, cols 0-1",
    ),
    "text": Kind((), normal_texts, odd_texts, lambda e: np.array([e.argmax()]), (2,), "[UNK]"),
}

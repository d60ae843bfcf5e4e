"""The explanation columns of scored samples: which metric and time steps, image regions or tokens drove a score.

Windows get Arrow arrays built from offsets (a map and a list column, no Python object per row); images and
texts, whose explanations are Python structures anyway, get lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from anomalake.models.base import REGION_PARTS, Detector, grid_blocks, region_grid
from anomalake.pipelines.config import MASK_FEATURE
from anomalake.pipelines.lake.schemas import WINDOW_RESULTS_ARROW

TOP_PARTS = 3  # metrics' steps, regions or tokens named per sample
MAP_SIDE = 8  # an image's error map is at most MAP_SIDE x MAP_SIDE cells


def image_explanations(contributions: np.ndarray) -> tuple[list, list]:
    """Per image: the top regions of the REGION_PARTS x REGION_PARTS grid (boxes with their error share) and a coarse
    error-share map."""
    pixels = contributions.reshape(contributions.shape[:3] + (-1,)).sum(axis=3)
    total = np.maximum(pixels.sum(axis=(1, 2)), 1e-300)
    boxes = region_grid(pixels.shape[1], pixels.shape[2], REGION_PARTS)
    shares = np.stack([pixels[:, r][:, :, c].sum(axis=(1, 2)) for r, c in boxes], axis=1) / total[:, None]
    top = np.argsort(-shares, axis=1, kind="stable")[:, :TOP_PARTS]
    regions = [
        [
            {
                "row0": int(boxes[j][0][0]),
                "col0": int(boxes[j][1][0]),
                "row1": int(boxes[j][0][-1]),
                "col1": int(boxes[j][1][-1]),
                "share": round(float(share[j]), 6),
            }
            for j in order
        ]
        for share, order in zip(shares, top)
    ]
    map_rows, map_cols = grid_blocks(pixels.shape[1], MAP_SIDE), grid_blocks(pixels.shape[2], MAP_SIDE)
    cells = np.stack(
        [np.stack([pixels[:, r][:, :, c].sum(axis=(1, 2)) for c in map_cols], axis=1) for r in map_rows], axis=1
    )
    maps = (cells / total[:, None, None]).round(4).tolist()
    return regions, maps


def text_explanations(detector: Detector, samples: np.ndarray, contributions: np.ndarray) -> list:
    """Per text: its most surprising tokens with their position and surprise."""
    names, surprise = detector._explanation_parts(samples, contributions)
    top = np.argsort(-surprise, axis=1, kind="stable")[:, :TOP_PARTS]
    return [
        [{"token": row_names[j], "position": int(j), "surprise": round(float(row[j]), 4)} for j in order if row[j] > 0]
        for row_names, row, order in zip(names, surprise, top)
    ]


def media_explanation_columns(
    detector: Detector, kind: str, samples: np.ndarray, contributions: np.ndarray
) -> dict[str, list]:
    if kind == "image":
        regions, maps = image_explanations(contributions)
        return {"top_regions": regions, "error_map": maps}
    return {"top_tokens": text_explanations(detector, samples, contributions)}


def window_explanations(
    n: int, rows: np.ndarray, contributions: np.ndarray, features: list[str], imputed: np.ndarray | None = None
) -> list[pa.Array]:
    """top_feature, feature_contributions (a map) and top_step_offsets as Arrow arrays (empty for unscored rows).

    `imputed` ((m, steps) bool, per scored row): steps filled over a gap, which are never named: their error is
    left out of the feature shares, and the top steps are the strongest observed ones. The imputation mask channel
    of a table with `gaps: {mask: true}` is an input, not a metric: never named either.
    """
    if features and features[-1] == MASK_FEATURE:
        contributions, features = contributions[:, :, :-1], features[:-1]
    if imputed is not None and imputed.any():
        contributions = np.where(imputed[:, :, None], 0.0, contributions)
    per_feature = contributions.sum(axis=1)
    shares = (per_feature / np.maximum(per_feature.sum(axis=1, keepdims=True), 1e-300)).round(6)
    top_feature = masked(n, rows, np.array(features, dtype=object)[shares.argmax(axis=1)], pa.string())
    per_step = contributions.sum(axis=2)
    if imputed is not None:
        per_step = np.where(imputed, -np.inf, per_step)
    top = np.argsort(-per_step, axis=1, kind="stable")[:, :TOP_PARTS]
    observed = np.take_along_axis(np.isfinite(per_step), top, axis=1)  # fewer observed steps than TOP_PARTS
    offsets = (per_step.shape[1] - 1 - top).astype(np.int32)
    width = np.zeros(n, dtype=np.int32)
    width[rows] = len(features)
    map_offsets = np.concatenate([[0], np.cumsum(width)]).astype(np.int32)
    keys = pa.array(np.tile(np.array(features, dtype=object), len(rows)), pa.string())
    contributions_map = pa.MapArray.from_arrays(map_offsets, keys, pa.array(shares.reshape(-1), pa.float64())).cast(
        WINDOW_RESULTS_ARROW.field("feature_contributions").type
    )
    steps = np.zeros(n, dtype=np.int32)
    steps[rows] = observed.sum(axis=1)
    step_offsets = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(steps)]).astype(np.int32)),
        pa.array(offsets[observed], pa.int32()),
        type=WINDOW_RESULTS_ARROW.field("top_step_offsets").type,
    )
    return [top_feature, contributions_map, step_offsets]


def imputed_steps(offsets: pa.Array, steps: int) -> np.ndarray:
    """(rows, steps) bool from a list column of imputed step offsets (back from the last step; null: none)."""
    lengths = np.asarray(offsets.value_lengths().fill_null(0), dtype=np.int64)
    mask = np.zeros((len(offsets), steps), dtype=bool)
    if lengths.sum():
        flat = np.asarray(offsets.flatten(), dtype=np.int64)
        mask[np.repeat(np.arange(len(offsets)), lengths), steps - 1 - flat] = True
    return mask


def masked(n: int, rows: np.ndarray, values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A length-n Arrow array of type `kind` holding `values` at `rows` and nulls elsewhere."""
    full = np.full(n, "" if kind == pa.string() else 0, dtype=object if kind == pa.string() else values.dtype)
    full[rows] = values
    mask = np.ones(n, dtype=bool)
    mask[rows] = False
    return pa.array(full, type=kind, mask=mask)

"""Window explanations: which metric and steps drove a score, never a step that was imputed over a gap."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from anomalake.pipelines.scoring.explanations import imputed_steps, window_explanations

FEATURES = ["cpu", "memory"]


def explain(contributions: np.ndarray, imputed: np.ndarray | None = None) -> tuple[list, list, list]:
    rows = np.arange(len(contributions))
    top, shares, steps = window_explanations(len(rows), rows, contributions, FEATURES, imputed)
    return top.to_pylist(), [dict(m) for m in shares.to_pylist()], steps.to_pylist()


def test_an_imputed_step_is_never_named_even_where_its_error_is_largest():
    contributions = np.full((1, 6, 2), 0.1)
    contributions[0, 2, 0] = 50.0  # cpu at step 2 (offset 3): filled over a gap, and the largest error
    contributions[0, 4, 1] = 5.0  # memory at step 4 (offset 1): observed
    imputed = np.zeros((1, 6), dtype=bool)
    imputed[0, 2] = True
    assert explain(contributions)[0] == ["cpu"] and explain(contributions)[2][0][0] == 3  # without the mask
    top, shares, steps = explain(contributions, imputed)
    assert top == ["memory"] and shares[0]["memory"] > shares[0]["cpu"]
    assert 3 not in steps[0] and steps[0][0] == 1 and len(steps[0]) == 3


def test_a_window_with_fewer_observed_steps_than_top_parts_names_only_those():
    contributions = np.ones((2, 4, 2))
    imputed = np.array([[True, True, True, False], [False, False, False, False]])
    _, _, steps = explain(contributions, imputed)
    assert steps == [[0], [3, 2, 1]]  # the first window's only observed step is its last (offset 0)


def test_imputed_offsets_become_a_step_mask():
    offsets = pa.array([[0, 2], None, [], [3]], pa.list_(pa.int32()))
    mask = imputed_steps(offsets, 4)
    expected = [[False, True, False, True], [False] * 4, [False] * 4, [True, False, False, False]]
    assert mask.tolist() == expected


def test_the_imputation_mask_channel_is_an_input_never_an_explanation():
    contributions = np.ones((1, 4, 3))
    contributions[0, :, 2] = 100.0  # the mask channel's error dominates
    rows = np.arange(1)
    top, shares, _ = window_explanations(1, rows, contributions, [*FEATURES, "imputed"])
    assert top.to_pylist() == ["cpu"] and set(dict(shares.to_pylist()[0])) == set(FEATURES)

"""The notebooks run top to bottom against a tiny demo-like lake (the `slow` tier: each starts its own Spark)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import nbformat
import pytest

from anomalake.pipelines.features.job import run_windows
from anomalake.pipelines.ingest.generate import GenerateSpec, write_generated
from anomalake.pipelines.lake.layout import day_range
from anomalake.pipelines.scoring.job import run_score_days
from anomalake.pipelines.training.job import run_train
from tests.conftest import START, TINY_DETECTOR

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def tiny_lake(ctx, tiny_table, monkeypatch):
    """Generated telemetry (with its labels), windows, a tiny model trained on two days, two days scored."""
    days = day_range(START, START + timedelta(days=3))
    write_generated(ctx.lake.root, GenerateSpec("telemetry", START, len(days), 3, 11))
    run_windows(ctx, tiny_table, days)
    run_train(ctx.with_new_run(), tiny_table, "dense_autoencoder", days[0], days[1], verbose=0, spec=TINY_DETECTOR)
    run_score_days(ctx.with_new_run(), tiny_table, "dense_autoencoder", days[2:])
    tables = ctx.lake.root / "tables.yml"
    tables.write_text("telemetry:\n" + "".join(f"  {k}: {v!r}\n".replace("'", '"') for k, v in _entry().items()))
    monkeypatch.setenv("ANOMALAKE_LAKE", str(ctx.lake.root))
    monkeypatch.setenv("ANOMALAKE_TABLES", str(tables))
    monkeypatch.setenv("ANOMALAKE_MASTER", "local[2]")
    monkeypatch.setenv("ANOMALAKE_SHUFFLE_PARTITIONS", "2")
    monkeypatch.setenv("ANOMALAKE_DRIVER_MEMORY", "1g")
    return ctx.lake.root


def _entry() -> dict:
    from tests.conftest import TINY_TABLE

    return {k: v for k, v in TINY_TABLE.items()}


def run_notebook(name: str, replace: dict[str, str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    path = NOTEBOOKS / name
    book = nbformat.read(path, as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in book.cells if c.cell_type == "code"
    ), f"{name} is kept with outputs"
    for cell in book.cells:
        for old, new in replace.items():
            cell.source = cell.source.replace(old, new)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return book


def outputs_text(book) -> str:
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_notebooks_execute(tiny_lake):
    explore = run_notebook("explore_scores.ipynb", {})
    text = outputs_text(explore)
    assert "2026-02-04" in text and "host-00" in text
    assert any("image/png" in out.get("data", {}) for c in explore.cells for out in c.get("outputs", []))
    compare = run_notebook("compare_detectors.ipynb", {"EPOCHS = None": "EPOCHS = 2"})
    text = outputs_text(compare)
    assert "windows scored by both" in text and "dense_autoencoder_mean" in text
    assert (tiny_lake / "scores" / "telemetry" / "detector=dense_autoencoder_mean").is_dir()

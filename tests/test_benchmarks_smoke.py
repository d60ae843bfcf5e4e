"""The performance benchmarks end to end at a tiny size (the `slow` tier): each script's JSON has its keys.

Nothing is timed against a bound here (tiny sizes measure start-up, not throughput); `make bench` measures.
Each script runs as `make bench` runs it, in its own process with a temporary --work and --out; then
benchmarks.run_all composes perf.json from their results.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SMALL = ["--entities", "20", "--train-windows", "1000"]
TINY = {
    "scoring": ["--rows", "2000", "--families", "dense_autoencoder", *SMALL],
    "windowing": ["--rows", "2000", *SMALL],
    "feed": ["--rows", "2000", "--entities", "20", "--rounds", "2"],
    "scaling": ["--rows", "2000", *SMALL],
}
KEYS = {
    "scoring": (
        "scoring_ratio",
        "scoring_ratio_cold",
        "scoring_vs_predict_batch_udf",
        "model_only_rps",
        "model_load_s",
        "loads_per_worker",
        "python_workers",
        "peak_rss_mb",
    ),
    "windowing": (
        "windowing_ratio",
        "spark_rows_per_s",
        "baseline_rows_per_s",
        "nightly_path_s",
        "nightly_rows",
        "peak_rss_mb",
    ),
    "feed": ("feed_ratio", "peak_rss_mb"),
    "scaling": ("scaling_4x", "peak_rss_mb"),
}
PERF_KEYS = (
    "scoring_ratio",
    "scoring_ratio_cold",
    "scoring_vs_predict_batch_udf",
    "windowing_ratio",
    "feed_ratio",
    "scaling_4x",
    "model_load_s",
    "peak_rss_mb",
    "model_only_rps",
    "absolute",
    "sizes",
    "machine",
    "gpu",
)
TIMED = ("_s", "_rps", "per_s", "_mb")  # keys whose values are durations, rates or memory: all must be positive


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The folder the scripts write their JSON into (run_all reads it back)."""
    return tmp_path_factory.mktemp("bench-results")


def run(module: str, args: list[str], work: Path) -> subprocess.CompletedProcess:
    """`python -m benchmarks.<module> ARGS --work WORK` from the repository root; fails the test on a bad exit."""
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args, "--work", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def positive_numbers(value, path: str = "") -> list[str]:
    """Paths of the durations, rates and sizes in memory under `value` that are not positive finite numbers."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in positive_numbers(v, f"{path}.{k}")]
    leaf = path.rsplit(".", 1)[-1]
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and leaf.endswith(TIMED) and not (math.isfinite(value) and value > 0):
        return [path]
    return []


@pytest.mark.parametrize("name", list(TINY))
def test_benchmark_writes_its_keys(name, results, tmp_path):
    out = results / f"{name}.json"
    done = run(name, [*TINY[name], "--out", str(out)], tmp_path / "work")
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result  # the same JSON on stdout
    assert [k for k in KEYS[name] if k not in result] == []
    assert positive_numbers(result) == []
    assert not any((tmp_path / "work").iterdir()), "the temporary lake was not deleted"
    for ratio, numerator, denominator in ratios_of(name, result):  # each ratio is of two separate measurements
        assert numerator != denominator and ratio == round(numerator / denominator, 4), (ratio, numerator, denominator)
    if name == "scoring":
        assert result["loads_per_worker"] == {"dense_autoencoder": 1}, "the model must load once per Python worker"
        assert result["python_workers"]["dense_autoencoder"] >= 1
    if name == "windowing":
        assert result["nightly_rows"] == result["sizes"]["rows"], "the nightly path covers every raw row"
    if name == "feed":
        assert len(result["absolute"]["petastorm"]["rounds_steps_per_s"]) == 2


def ratios_of(name: str, result: dict) -> list[tuple[float, float, float]]:
    """(ratio, numerator, denominator) of each ratio a benchmark reports, from the absolute figures beside it."""
    if name == "scoring":
        run = result["absolute"]["runs"]["dense_autoencoder"]
        udf = result["scoring_vs_predict_batch_udf"]["dense_autoencoder"]
        return [
            (result[f"scoring_ratio{cold}"]["dense_autoencoder"], run["spark"][key], run["baseline"][key])
            for cold, key in (("", "warm_rps"), ("_cold", "cold_rps"))
        ] + [(udf, run["spark"]["warm_rps"], run["spark"]["predict_batch_udf_rps"])]
    if name == "windowing":
        return [(result["windowing_ratio"], result["spark_rows_per_s"], result["baseline_rows_per_s"])]
    if name == "feed":
        feeds = result["absolute"]
        petastorm = feeds["petastorm"]["steps_per_s"]
        return [
            (result["feed_ratio"], petastorm, feeds["in_memory"]["steps_per_s"]),
            (feeds["feed_ratio_shuffled_once"], petastorm, feeds["in_memory_shuffled_once"]["steps_per_s"]),
        ]
    return [(result["scaling_4x"], result["absolute"]["4x"]["seconds"], result["absolute"]["1x"]["seconds"])]


def test_run_all_composes_perf_json(results, tmp_path):
    out = tmp_path / "perf.json"
    flags = [
        "--scoring-rows",
        "2000",
        "--families",
        "dense_autoencoder",
        "--windowing-rows",
        "2000",
        "--windowing-entities",
        "20",
        "--feed-rows",
        "2000",
        "--scaling-rows",
        "2000",
        "--results",
        str(results),
        "--reuse",
        "--out",
        str(out),
    ]
    done = run("run_all", flags, tmp_path / "work")
    perf = json.loads(out.read_text())
    assert [k for k in PERF_KEYS if k not in perf] == []
    assert positive_numbers({k: v for k, v in perf.items() if k != "absolute"}) == []
    assert set(perf["model_load_s"]) >= {"seconds", "loads_per_worker", "python_workers"}
    assert perf["machine"]["cpu_count"] == os.cpu_count()
    for key, name in (("scoring_ratio", "scoring"), ("windowing_ratio", "windowing"), ("feed_ratio", "feed")):
        assert perf[key] == json.loads((results / f"{name}.json").read_text())[key], f"perf.json's {key} is the run's"
    if "skipped" in perf["gpu"]:
        assert "GPU variant skipped: " in done.stdout
    else:
        assert perf["gpu"]["scoring_ratio"] and perf["gpu"]["feed_ratio"] > 0


def test_the_feed_profile_reports_every_dataset(tmp_path):
    out = tmp_path / "profile_feed.json"
    run("profile_feed", ["--rows", "2000", "--entities", "20", "--rounds", "1", "--out", str(out)], tmp_path / "work")
    result = json.loads(out.read_text())
    datasets = {"petastorm", "in_memory", "in_memory_shuffled_once", "feed_steps_without_petastorm"}
    assert set(result["steps_per_s"]) == datasets and all(v > 0 for v in result["steps_per_s"].values())
    assert result["ratio_to_in_memory_shuffled_once"]["in_memory_shuffled_once"] == 1.0
    assert 0 < result["sizes"]["row_group_rows"] <= 2000


def test_the_scoring_profile_reports_every_phase(tmp_path):
    out = tmp_path / "profile_scoring.json"
    run("profile_scoring", ["--rows", "2000", "--entities", "20", "--top", "3", "--out", str(out)], tmp_path / "work")
    result = json.loads(out.read_text())
    assert set(result) >= {"spark", "udf", "baseline"}
    assert positive_numbers(result["spark"], "spark") == [] and result["spark"]["whole_job"] > 0
    assert len(result["udf"]["map_in_arrow"]["top_own"]) == 3 and result["baseline"]["seconds"] > 0

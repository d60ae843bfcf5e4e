"""The package layout: one import package from the fixed folders, a zip executors can import, old models still load."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from samples import KINDS

from anomalake.models.base import Detector

REPO = Path(__file__).resolve().parent.parent
SAVED = Path(__file__).parent / "data" / "models_saved_before_the_layout"
FOLDERS = {"anomalake.models": REPO / "models", "anomalake.pipelines": REPO / "pipelines"}


def _package_folders() -> dict[str, Path]:
    """Every folder with an __init__.py under models/ and pipelines/, by its dotted name."""
    found = {}
    for prefix, root in FOLDERS.items():
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            found[".".join((prefix, *relative))] = init.parent
    return found


def test_the_wheel_lists_every_package_folder_and_only_those():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder.name for name, folder in FOLDERS.items()}
    assert sorted(config["packages"]) == sorted(_package_folders())


def test_every_sub_package_says_what_it_holds_and_what_it_may_import():
    for name, folder in _package_folders().items():
        doc = (folder / "__init__.py").read_text()
        assert doc.startswith('"""') and len(doc) > 80, f"{name}: no docstring"
        if name not in FOLDERS:  # the roots say what they hold; each sub-package also what it may import
            assert re.search(r"[Mm]ay import", doc), f"{name}: its docstring does not say what it may import"


def test_the_package_is_anomalake_and_nothing_installs_top_level_models_or_pipelines():
    import anomalake.models
    import anomalake.pipelines

    assert Path(anomalake.models.__file__).parent == REPO / "models"
    assert Path(anomalake.pipelines.__file__).parent == REPO / "pipelines"
    for generic in ("models", "pipelines"):
        found = subprocess.run([sys.executable, "-c", f"import {generic}"], cwd="/", capture_output=True, text=True)
        assert found.returncode != 0, (
            f"`import {generic}` works outside the repository: the wheel installs a generic package"
        )


def test_no_module_edits_sys_path():
    offenders = [
        str(p.relative_to(REPO))
        for folder in ("models", "pipelines", "benchmarks", "infra", "dags", "notebooks")
        for p in (REPO / folder).rglob("*")
        if p.suffix in (".py", ".ipynb") and "sys.path.insert" in p.read_text()
    ]
    assert not offenders


@pytest.fixture(scope="module")
def code_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([str(REPO / "infra" / "package.sh"), str(out)], capture_output=True, text=True, check=True)
    return Path(built.stdout.strip().splitlines()[-1])


def test_the_code_zip_imports_on_python_311_without_the_installed_package(code_zip):
    # -S: no site-packages, so neither the editable install nor any dependency: only the zip on the path.
    probe = (
        "import pkgutil, anomalake.pipelines.errors, anomalake.models.families as f; "
        "print(anomalake.pipelines.errors.__file__); print(sorted(m.name for m in pkgutil.iter_modules(f.__path__)))"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd="/", env={"PYTHONPATH": str(code_zip)}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    where, modules = run.stdout.splitlines()
    assert where.startswith(str(code_zip))
    assert {"dense_autoencoder", "lstm_forecaster", "gan", "conv_autoencoder", "text_transformer"} <= set(
        ast.literal_eval(modules)
    )


@pytest.mark.parametrize("saved", sorted(p.name for p in SAVED.iterdir() if p.is_dir()))
def test_models_saved_before_the_layout_still_load_and_score_the_same(saved):
    folder = SAVED / saved
    kind = KINDS[saved.split("-")[-1]]
    detector = Detector.load(folder)
    expected = np.array(json.loads((folder / "expected_scores.json").read_text()))
    # Not a determinism check (that is exact, elsewhere): the same archive on another CPU may round differently.
    np.testing.assert_allclose(detector.score_samples(kind.normal(8, 9)), expected, rtol=1e-5)


@pytest.mark.spark
def test_sparks_python_workers_import_the_package_from_the_editable_install(spark):
    def where_workers_import_from(_):  # nested: pickled by value, so only the package itself must import there
        import anomalake.models.registry
        import anomalake.pipelines.scoring.udf

        yield (
            anomalake.pipelines.scoring.udf.__file__,
            anomalake.models.registry.__file__,
            sorted(anomalake.models.registry.discover()),
        )

    found = spark.sparkContext.parallelize(range(2), 2).mapPartitions(where_workers_import_from).collect()
    assert len(found) == 2
    for udf, registry, families in found:
        assert (
            Path(udf) == REPO / "pipelines" / "scoring" / "udf.py" and Path(registry) == REPO / "models" / "registry.py"
        )
        assert {"dense_autoencoder", "lstm_forecaster", "text_transformer"} <= set(families)

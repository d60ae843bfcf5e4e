"""`anomalake doctor`: is everything a job needs here? Java, Spark, its JARs, TensorFlow, Petastorm, the lake folder."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from anomalake.pipelines.errors import JobError
from anomalake.pipelines.settings import Settings


@dataclass(frozen=True)
class Check:
    """One thing checked: ok or not, and what was found or what to do."""

    name: str
    ok: bool
    detail: str


def _java() -> Check:
    java = shutil.which("java")
    if not java:
        return Check(
            "java",
            False,
            "no `java` on PATH: Spark needs Java 17 or 21 (Debian: apt-get install openjdk-17-jre-headless)",
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    found = re.search(r'version "([^"]+)"', result.stderr + result.stdout)
    version = found.group(1) if found else "unknown"
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    return Check(
        "java",
        major in (17, 21),
        f"{java}: {version}" + ("" if major in (17, 21) else " (Spark 4 needs Java 17 or 21)"),
    )


def _module(name: str, label: str, fix: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # an import can fail in many ways (missing, broken wheel, wrong numpy)
        return Check(label, False, f"cannot import {name} ({type(error).__name__}: {error}); {fix}")
    return Check(label, True, f"{getattr(module, '__version__', '?')} ({Path(module.__file__).parent})")


def _lake(settings: Settings) -> Check:
    lake = settings.lake_path
    if lake.exists() and not lake.is_dir():
        return Check("lake", False, f"{lake} exists and is not a folder; point --lake or ANOMALAKE_LAKE at a folder")
    parent = lake if lake.exists() else lake.parent
    if not os.access(parent, os.W_OK):
        return Check(
            "lake", False, f"{parent} is not writable; point --lake or ANOMALAKE_LAKE at a folder you can write"
        )
    tables = sorted(p.name for p in (lake / "raw").iterdir()) if (lake / "raw").is_dir() else []
    state = f"raw tables: {', '.join(tables)}" if tables else "empty (run `anomalake demo` to fill it)"
    return Check(
        "lake", True, f"{lake}: {state}" if lake.exists() else f"{lake}: not created yet (the first job creates it)"
    )


def _jars(settings: Settings) -> Check:
    try:
        from anomalake.pipelines.spark import installed_jars  # imports pyspark: checked after it

        found = installed_jars(settings)
    except ImportError as error:
        return Check("jars", False, f"cannot check without pyspark ({error})")
    except JobError as error:
        return Check("jars", False, str(error))
    return Check("jars", True, f"{settings.jars}: {', '.join(Path(j).name for j in found)}")


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order a job needs them."""
    fix = "run `make install` (or pip install -e '.[cpu]')"
    return [
        _java(),
        _module("pyspark", "spark", fix),
        _jars(settings),
        _module("tensorflow", "tensorflow", fix + "; a GPU machine: pip install -e '.[gpu]'"),
        _module("petastorm", "petastorm", fix),
        _lake(settings),
    ]

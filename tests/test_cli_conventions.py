"""The command line's conventions: --help with an example everywhere, --version, exit codes, --lake, doctor."""

from __future__ import annotations

import pytest

from anomalake.pipelines.jobs.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_exits_0_and_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "example:\n  anomalake " + command in out


def test_top_level_help_version_and_a_wrong_option(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("anomalake ")
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["score", "--table", "telemetry", "--detector", "x", "--frobnicate"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1 and "unrecognized arguments: --frobnicate" in err and "anomalake score --help" in err


def test_an_unknown_table_is_a_usage_error_that_says_what_to_do_next(tmp_path, capsys):
    code = main(["--lake", str(tmp_path), "report", "--table", "nope", "--date", "2026-01-01"])
    err = capsys.readouterr().err
    assert code == 2 and "table nope is not in" in err and "(next:" in err


def test_a_failed_job_exits_1_and_lake_option_beats_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANOMALAKE_LAKE", str(tmp_path / "elsewhere"))
    code = main(["--lake", str(tmp_path / "mine"), "report", "--table", "telemetry", "--date", "2026-01-01"])
    err = capsys.readouterr().err
    assert (
        code == 1 and str(tmp_path / "mine") in err and "elsewhere" not in err and "run `anomalake score` first" in err
    )


def test_doctor_names_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on this PATH
    code = main(["--lake", str(tmp_path / "lake"), "doctor"])
    out = capsys.readouterr().out
    assert code == 1
    assert "MISSING java" in out and "Java 17" in out
    assert "ok      spark" in out and "ok      petastorm" in out and "ok      lake" in out
    assert "ok      jars" in out and "delta-spark_2.13-4.0.1.jar" in out
    monkeypatch.setenv("ANOMALAKE_JARS", str(tmp_path / "no-jars"))
    assert main(["--lake", str(tmp_path / "lake"), "doctor"]) == 1
    assert "MISSING jars" in capsys.readouterr().out

"""The one error type jobs raise for bad input: its message is the single line the CLI prints."""

from __future__ import annotations


class JobError(RuntimeError):
    """A job cannot go on; the message names the table, partition and column where they apply."""


def input_error(table: str, partition: str | None, column: str | None, problem: str) -> JobError:
    """Build the one-line error: 'table T, partition dt=D, column C: problem'."""
    parts = [f"table {table}"]
    if partition:
        parts.append(f"partition {partition}")
    if column:
        parts.append(f"column {column}")
    return JobError(", ".join(parts) + ": " + problem)

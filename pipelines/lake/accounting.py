"""Row accounting, the one copy every job uses: rows in = rows out + context + quarantined, and the quarantine limit.

A job whose rows do not balance lost or invented rows and fails; a job that quarantined more than its table's
`max_quarantine_share` (reasons that are no data problem aside) fails too, with the counts by reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from anomalake.pipelines.errors import JobError


@dataclass(frozen=True)
class RowAccount:
    """What one job run did with its rows, by outcome (quarantined: reason -> rows)."""

    rows_in: int
    rows_out: int
    context: int = 0
    quarantined: Mapping[str, int] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def balanced(self) -> bool:
        return self.rows_out + self.context + self.quarantined_total == self.rows_in

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "RowAccount":
        """The account of a run record (lake/_runs/...)."""
        return cls(
            record["rows_in"], record.get("rows_out", 0), record.get("context", 0), dict(record.get("quarantined", {}))
        )

    def check(self, where: str, job: str) -> None:
        """JobError naming `where` unless the rows balance."""
        if not self.balanced:
            accounted = self.rows_out + self.context + self.quarantined_total
            raise JobError(
                f"{where}: {job} row accounting does not balance: {self.rows_in} in, {accounted} accounted "
                f"({self.rows_out} out + {self.context} context + {self.quarantined_total} quarantined)"
            )

    def quarantine_problem(self, limit: float, exempt: Iterable[str] = (), noun: str = "rows") -> str | None:
        """What is wrong when the quarantined share (reasons in `exempt` aside) passes `limit`; else None."""
        problems = sum(n for reason, n in self.quarantined.items() if reason not in set(exempt))
        if self.rows_in and problems / self.rows_in > limit:
            return (
                f"{problems} of {self.rows_in} {noun} quarantined ({problems / self.rows_in:.1%} > "
                "max_quarantine_share "
                f"{limit:.0%}): {dict(self.quarantined)}"
            )
        return None

    def check_quarantine(self, where: str, limit: float, exempt: Iterable[str] = (), noun: str = "rows") -> None:
        """JobError naming `where` when too many rows were quarantined (see `quarantine_problem`)."""
        problem = self.quarantine_problem(limit, exempt, noun)
        if problem:
            raise JobError(f"{where}: {problem}")


def add_counts(counts: dict[str, int], reason: str, rows: int) -> dict[str, int]:
    """`counts` with `rows` more under `reason` (the quarantined map jobs build up from their tallies)."""
    counts[reason] = counts.get(reason, 0) + rows
    return counts

"""Run the test tiers as separate pytest processes, two at a time, and say how long each took.

`make test` calls this. Each tier runs alone (`pytest -m <tier>`), as the README promises it can, with its own
temporary folder; the airflow and cluster tiers pick free ports, so two tiers never share a folder or a port.
Two run at once so that one tier's waits (a scheduler polling, a cluster starting) overlap another's work; the
suite is mostly CPU-bound, so this gains little by itself (measured: the README's Tests section). The longest
tiers start first (longest-first scheduling).
Each tier's output is printed whole when it ends; the summary (tier, result, seconds) is printed last and
written to .pytest-tiers/summary.txt, which .ci/run prints again at its end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".pytest-tiers"
# Longest first (seconds measured on the 2-core machine, see the README's Tests section).
TIERS = ("slow", "spark", "unit", "airflow", "cluster")
LANES = 2


def run_tier(tier: str, results: dict, lock: threading.Lock) -> None:
    folder = OUT / tier
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "pytest.log"
    started = time.monotonic()
    with open(log, "w") as handle:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-m", tier, "--durations=10", f"--basetemp={folder / 'tmp'}"],
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    outcome = re.findall(r"^=+ (.*\b(?:passed|failed|error|errors|no tests ran)\b.*) =+$", text, re.MULTILINE)
    with lock:
        results[tier] = (code, seconds, outcome[-1] if outcome else "no pytest summary line")
        print(f"\n######## tier {tier}: exit {code}, {seconds:.0f} s ########\n{text}", flush=True)


def main() -> int:
    OUT.mkdir(exist_ok=True)
    tiers = list(sys.argv[1:]) or list(TIERS)
    results: dict = {}
    lock = threading.Lock()
    started = time.monotonic()
    pending = list(tiers)

    def lane() -> None:
        while True:
            with lock:
                if not pending:
                    return
                tier = pending.pop(0)
            run_tier(tier, results, lock)

    threads = [threading.Thread(target=lane) for _ in range(min(LANES, len(tiers)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = time.monotonic() - started
    lines = ["tier      exit  seconds  result"]
    lines += [f"{t:<9} {results[t][0]:>4} {results[t][1]:>8.0f}  {results[t][2]}" for t in tiers]
    lines.append(f"all tiers, {LANES} at a time: {total:.0f} s wall")
    summary = "\n".join(lines)
    (OUT / "summary.txt").write_text(summary + "\n")
    print("\n" + summary)
    return 0 if all(results[t][0] == 0 for t in tiers) else 1


if __name__ == "__main__":
    sys.exit(main())

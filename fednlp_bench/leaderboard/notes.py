"""What a reader must be told about a row besides its numbers: clients that failed during
training, and departures from the algorithm's paper setup.

A *client failure* is a sampled client whose update raised (NaN, out of memory, a plugin bug)
and was left out of its round: the run finished, but on fewer updates than its configuration
promises, so its numbers are not those of the algorithm as configured. The engine lists them
in ``metrics.failed_clients`` (``{round, client, reason}``). ``metrics.dropped_clients`` counts
clients removed by the simulated dropout ``fl.dropout``; that is part of the experiment (it is
in the table key), so dropped clients only count as failures when the run asked for no dropout.

*Deviations* (``algorithm.deviations``) are written by the run when its setup departs from the
paper the algorithm comes from (e.g. SCAFFOLD's analysis assumes SGD clients).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fednlp_bench.leaderboard.keys import deviations
from fednlp_bench.record_checks import safe_text

MAX_LISTED = 5  # failures listed by name in a tooltip or warning; the count is always complete


@dataclass
class ClientFailures:
    """Failed client updates of one run or, summed, of a row's runs."""

    failed: int = 0  # entries of metrics.failed_clients
    dropped: int = 0  # clients dropped although fl.dropout was 0
    runs: int = 0  # runs with at least one failure
    examples: list[str] = field(default_factory=list)  # "seed 1 round 2 client 3: reason"

    @property
    def total(self) -> int:
        return self.failed + self.dropped

    def __add__(self, other: ClientFailures) -> ClientFailures:
        return ClientFailures(self.failed + other.failed, self.dropped + other.dropped, self.runs + other.runs,
                              (self.examples + other.examples)[:MAX_LISTED])

    def summary(self) -> str:
        """``3 failed client updates (2 of 3 seeds)``; '' without failures."""
        if not self.total:
            return ""
        parts = [f"{self.failed} failed client update{'s' * (self.failed != 1)}"] if self.failed else []
        if self.dropped:
            parts.append(f"{self.dropped} client{'s' * (self.dropped != 1)} dropped without fl.dropout")
        return ", ".join(parts)


def _dropout(record: dict[str, Any]) -> float:
    v = record["fl"].get("dropout")
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def client_failures(record: dict[str, Any]) -> ClientFailures:
    """The failures of one (strictly checked) record; see the module docstring."""
    m = record["metrics"]
    failed = [f for f in m.get("failed_clients") or [] if isinstance(f, dict)]
    dropped = m.get("dropped_clients") if _dropout(record) == 0 else 0
    dropped = dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else 0
    seed = record["seed"]
    examples = [f"seed {seed} round {f.get('round')} client {f.get('client')}: {safe_text(f.get('reason'), 160)}"
                for f in failed[:MAX_LISTED]]
    return ClientFailures(len(failed), dropped, int(bool(failed or dropped)), examples)


def row_failures(records: list[dict[str, Any]]) -> ClientFailures:
    total = ClientFailures()
    for r in records:
        total = total + client_failures(r)
    return total


def row_deviations(records: list[dict[str, Any]]) -> list[str]:
    """The distinct deviations over a row's runs (the row key makes them equal), in order."""
    out: list[str] = []
    for r in records:
        out += [d for d in deviations(r) if d not in out]
    return out


def submit_warning(record: dict[str, Any]) -> str:
    """The warning ``submit`` prints for a record with client failures ('' without)."""
    f = client_failures(record)
    if not f.total:
        return ""
    failed = [x for x in record["metrics"].get("failed_clients") or [] if isinstance(x, dict)]
    listed = "; ".join(f"round {x.get('round')} client {x.get('client')}: {safe_text(x.get('reason'), 160)}"
                       for x in failed[:MAX_LISTED])
    more = f"; and {len(failed) - MAX_LISTED} more" if len(failed) > MAX_LISTED else ""
    return (f"{f.summary()}{f' ({listed}{more})' if listed else ''}; accepted, and its leaderboard row is "
            f"marked as having client failures")

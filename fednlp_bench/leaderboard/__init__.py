"""Leaderboard: turn result records into README.md + index.html + plots, accept and verify submissions.

>>> from pathlib import Path
>>> from fednlp_bench.leaderboard import build, submit
>>> # submit(Path("run.json"), Path("leaderboard/results"))
>>> # report = build([Path("leaderboard/results")], Path("leaderboard"))
"""
from __future__ import annotations

from fednlp_bench.leaderboard.build import BuildReport, build
from fednlp_bench.leaderboard.load import Skipped, record_digest
from fednlp_bench.leaderboard.submit import submission_name, submit

__all__ = ["BuildReport", "Skipped", "build", "record_digest", "submission_name", "submit"]

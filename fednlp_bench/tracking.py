"""Experiment tracking: Weights & Biases, offline by default.

``offline`` writes a local run directory (``<results_dir>/wandb``) that
``wandb sync`` can upload later; ``online`` needs an account; ``disabled``
skips wandb entirely. The same metrics as the result record are logged.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, mode: str, results_dir: str, run_id: str, config: dict[str, Any]) -> None:
        self.mode = mode
        self.run = None
        self.dir: Path | None = None
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.dir = Path(results_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fednlp-bench"),
            name=run_id,
            id=run_id.replace(":", "-"),
            config=config,
            mode=mode,
            dir=str(self.dir),
            reinit="finish_previous",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def log(self, row: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "round"}, step=int(row["round"]))

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    @property
    def run_dir(self) -> str | None:
        return None if self.run is None else str(Path(self.run.dir).parent)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

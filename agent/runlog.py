"""What a trainer needs from a run: a place for metrics and a folder for checkpoints.

``steer.ops.run.Run`` implements this protocol; tests can pass :class:`MemoryLog`.
Trainers in ``agent`` depend on the protocol only, so they never import ``ops``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol


class RunLog(Protocol):
    """Where a trainer writes metrics and checkpoints."""

    checkpoint_dir: Path

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record namespaced scalars (``charts/success_rate``, ``losses/q``) at ``step``."""


class MemoryLog:
    """A RunLog that keeps metrics in a list (tests, notebooks)."""

    def __init__(self, checkpoint_dir: Path | None = None):
        self.checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="steer-ckpt-"))
        self.records: list[dict] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.records.append({"step": step, **metrics})

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in self.records if key in r]

"""Small text helpers the console's screens share."""

from __future__ import annotations

import math
from pathlib import Path


def short_path(path: Path) -> str:
    """A path relative to the working directory when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def fmt(x: float | None, spec: str = ".3g") -> str:
    """A number for a table cell; ``-`` when missing or not finite."""
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


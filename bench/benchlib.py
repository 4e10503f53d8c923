"""What every benchmark's results file says about where it ran, and how it is written.

Each ``bench/<name>.py`` writes ``bench/results/<name>.json`` as ``{"figures": …, "details": …,
"machine": …, "date": …}``; ``bench/readme_table.py`` reads them back.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    """The CPU's model name, the core count and the GPU (none on these benches)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None}


def write_results(out: Path | str, figures: dict, details: dict) -> dict:
    """Write a benchmark's results document to ``out`` (folders made, replaced atomically); returns it."""
    doc = {"figures": figures, "details": details, "machine": machine(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    return doc


def median_or_none(values: list) -> float | None:
    """Median of per-seed figures where None (a level never reached) counts as above every number;
    None when the median itself was not reached."""
    ranked = sorted(float("inf") if v is None else float(v) for v in values)
    n = len(ranked)
    m = (ranked[(n - 1) // 2] + ranked[n // 2]) / 2
    return None if m == float("inf") else m

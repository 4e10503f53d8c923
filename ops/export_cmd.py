"""``steer export``: a trained policy as one ONNX file, checked against torch (the stage is
:func:`steer.ops.stages.export_policy`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro


@dataclass(frozen=True)
class ExportCommand:
    """Export a BC, DSRL or PPO run's policy to one ONNX file (opset 17, spec in its metadata)."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory made by `steer bc`, `steer dsrl` or `steer drive train`."""
    out: Path = Path("policy.onnx")
    """Where to write the ONNX file."""
    check: bool = True
    """Compare onnxruntime with torch on 1,000 random observations and refuse a mismatch above 1e-5."""


def export(cfg: ExportCommand) -> int:
    """Export a BC, DSRL or PPO run's policy to one ONNX file (opset 17, spec in its metadata)."""
    from steer.ops.stages import export_policy

    res = export_policy(cfg.run, cfg.out, check=cfg.check)
    spec = res.spec
    line = (f"exported {spec.kind} policy of {cfg.run} to {cfg.out} (obs {spec.obs_dim}, "
            f"action chunk {spec.chunk_len}x{spec.action_dim}, {spec.control_rate_hz:.0f} Hz)")
    if res.max_abs_diff is not None:
        line += f"; max |onnx - torch| = {res.max_abs_diff:.1e}"
    print(line)
    return 0

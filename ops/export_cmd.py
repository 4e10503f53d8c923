"""``steer export``: a trained policy as one ONNX file, checked against torch."""

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
    from steer.agent.export import ExportError, export_run, parity

    if not cfg.run.is_dir():
        raise ExportError(f"{cfg.run} is not a run directory; pass one made by `steer bc`, `steer dsrl` or `steer drive train`.")
    spec = export_run(cfg.run, cfg.out)
    line = (f"exported {spec.kind} policy of {cfg.run} to {cfg.out} (obs {spec.obs_dim}, "
            f"action chunk {spec.chunk_len}x{spec.action_dim}, {spec.control_rate_hz:.0f} Hz)")
    if cfg.check:
        diff = parity(cfg.run, cfg.out)
        if diff > 1e-5:
            cfg.out.unlink(missing_ok=True)
            raise ExportError(f"the ONNX graph differs from torch by {diff:.2e} (> 1e-5); nothing was written.")
        line += f"; max |onnx - torch| = {diff:.1e}"
    print(line)
    return 0

"""``steer adapt``: parse options, run the robot learner (:mod:`steer.ops.adapt`), print its result."""

from __future__ import annotations

from steer.ops.adapt import AdaptConfig, run_adapt


def adapt(cfg: AdaptConfig) -> int:
    """Adapt a BC policy on a robot with DSRL: its node runs the BC ONNX with --steered, this learner steers it."""
    res = run_adapt(cfg)
    final = f"; deterministic actor {res.eval_success:.2f} over {res.eval_episodes} episodes" \
        if res.eval_success is not None else ""
    print(f"adapted on the robot: {res.episodes} episodes, {res.env_steps} env steps, recent success "
          f"{res.success_recent:.2f} (baseline L_b {res.baseline_success:.2f}){final}; run in {res.run}")
    return 0

"""Scripted experts that produce demonstrations for behaviour cloning.

The PlanarPush expert is a closed-loop controller: it moves behind the puck on the
line through the puck and its target, then pushes along that line while correcting
the lateral offset. Its demonstrations are deliberately imperfect in the way real
teleoperation data often is: a fraction of them come from an operator whose y axis
was mirrored (a frame-convention mistake), who pushes the puck to the goal reflected
across the x axis. A policy cloned from the mixture is bimodal and succeeds about
as often as the careful operator demonstrated; which mode it follows is decided by
its initial noise, so steering that noise can recover the careful mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PUCK_RADIUS = 0.04
PUSHER_RADIUS = 0.015


@dataclass(frozen=True)
class PushExpertConfig:
    """Behaviour of the scripted PlanarPush operator."""

    mirrored_fraction: float = 0.5
    """Share of episodes demonstrated by the operator with the mirrored y axis."""
    action_noise: float = 0.02
    """Std (m/s) of Gaussian noise added to every commanded velocity."""
    push_speed: float = 0.2
    """Pushing speed (m/s) far from the target."""
    max_speed: float = 0.28
    """Commanded speeds are clipped to this norm (m/s)."""


class PushExpert:
    """Closed-loop scripted operator for PlanarPush; ``act(obs)`` returns a velocity."""

    def __init__(self, config: PushExpertConfig | None = None, seed: int = 0):
        self.config = config or PushExpertConfig()
        self.rng = np.random.default_rng(seed)
        self.mirrored = False

    def start_episode(self) -> None:
        """Draw which operator demonstrates the next episode."""
        self.mirrored = bool(self.rng.random() < self.config.mirrored_fraction)

    def target(self, obs: np.ndarray) -> np.ndarray:
        goal = np.asarray(obs[8:10], dtype=np.float64)
        return goal * np.array([1.0, -1.0]) if self.mirrored else goal

    def act(self, obs: np.ndarray, noise: bool = True) -> np.ndarray:
        cfg = self.config
        pusher, puck = np.asarray(obs[0:2], np.float64), np.asarray(obs[2:4], np.float64)
        d = self.target(obs) - puck
        dist = float(np.linalg.norm(d))
        u = d / max(dist, 1e-6)
        contact = PUCK_RADIUS + PUSHER_RADIUS
        rel = pusher - puck
        along = float(rel @ u)
        lateral = rel - along * u
        if along > -0.8 * contact or np.linalg.norm(lateral) > 0.02:
            # Approach the point behind the puck; when the pusher is beside or ahead
            # of the puck, pass around it on its own side instead of through it.
            behind = puck - u * (contact + 0.015)
            waypoint = behind
            if along > -0.5 * contact:
                side = lateral / max(np.linalg.norm(lateral), 1e-6)
                waypoint = puck + side * (contact + 0.03) - u * 0.5 * contact
            v = 6.0 * (waypoint - pusher)
        else:
            speed = min(cfg.push_speed, 2.5 * dist + 0.03)
            v = speed * u - 6.0 * lateral
        if noise and cfg.action_noise > 0:
            v = v + self.rng.normal(0.0, cfg.action_noise, size=2)
        n = float(np.linalg.norm(v))
        if n > cfg.max_speed:
            v = v * (cfg.max_speed / n)
        return v.astype(np.float32)


def make_expert(env_id: str, seed: int, flawed_fraction: float = 0.5):
    """The scripted expert of a task, with ``flawed_fraction`` of its episodes from the imperfect operator.

    PlanarPush: the mirrored operator; Lift and Can: the grasp with a calibration offset.
    """
    if env_id == "steer/PlanarPush-v0":
        return PushExpert(PushExpertConfig(mirrored_fraction=flawed_fraction), seed=seed)
    if env_id == "steer/Lift-v0":
        from steer.sim.robosuite_lift import LiftExpert

        return LiftExpert(p_offset=flawed_fraction, seed=seed)
    if env_id == "steer/Can-v0":
        from steer.sim.robosuite_can import CanExpert

        return CanExpert(p_offset=flawed_fraction, seed=seed)
    raise ValueError(f"no scripted expert for {env_id}; tasks with one: {', '.join(EXPERT_TASKS)}.")


EXPERT_TASKS = ("steer/PlanarPush-v0", "steer/Lift-v0", "steer/Can-v0")
"""Tasks that :func:`make_expert` knows."""

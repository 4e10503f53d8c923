"""robosuite PickPlaceCan (Panda, OSC_POSE) as a gymnasium env (``steer/Can-v0``), plus an imperfect scripted expert.

The DSRL paper's Can task: pick the can from the left bin and place it in its quadrant of
the right bin. The robosuite plumbing (action, reward, seeding, servo) is in
:mod:`steer.sim.robosuite_env`; this module holds what is Can's own.

Observation (float32, 19-D, names in ``CanEnv.obs_names``):
    eef_pos (3), eef_quat (4, xyzw), gripper_qpos (2), can_pos (3), can_quat (4, xyzw),
    can_rel_eef (3, can_pos - eef_pos).
Success: the can lies in its quadrant of the target bin (robosuite ``_check_success``).
The target quadrant is the same in every episode, so the observation does not carry it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from steer.sim.robosuite_env import RobosuiteTaskEnv, ScriptedOperator, flatten

OBS_NAMES = [
    "eef_pos_x", "eef_pos_y", "eef_pos_z",
    "eef_quat_x", "eef_quat_y", "eef_quat_z", "eef_quat_w",
    "gripper_qpos_0", "gripper_qpos_1",
    "can_pos_x", "can_pos_y", "can_pos_z",
    "can_quat_x", "can_quat_y", "can_quat_z", "can_quat_w",
    "can_rel_eef_x", "can_rel_eef_y", "can_rel_eef_z",
]

_OBS_KEYS = [
    ("robot0_eef_pos", 3),
    ("robot0_eef_quat", 4),
    ("robot0_gripper_qpos", 2),
    ("Can_pos", 3),
    ("Can_quat", 4),
]


class CanEnv(RobosuiteTaskEnv):
    """``robosuite.make("PickPlaceCan", robots="Panda", ...)`` as a gymnasium env (see :class:`RobosuiteTaskEnv`)."""

    ROBOSUITE_ENV = "PickPlaceCan"
    OBS_NAMES = OBS_NAMES

    def __init__(self, max_steps: int = 250, hard_reset: bool = False, build_seed: int = 0):
        super().__init__(max_steps=max_steps, hard_reset=hard_reset, build_seed=build_seed)
        env = self._env
        self.target_xy = np.asarray(env.target_bin_placements[env.object_id][:2], dtype=np.float64).copy()
        self.bin_z = float(env.bin2_pos[2])

    def _observe(self, obs_dict: dict) -> np.ndarray:
        base = flatten(obs_dict, _OBS_KEYS)
        rel = (np.asarray(obs_dict["Can_pos"]) - np.asarray(obs_dict["robot0_eef_pos"])).astype(np.float32)
        return np.concatenate([base, rel])


# The target quadrant's centre in robosuite 1.5's default PickPlace arena; the expert needs it, the policy
# learns it from the demonstrations.
TARGET_XY = (0.1975, 0.4025)


class CanExpert(ScriptedOperator):
    """Scripted pick-and-place operator with a per-episode hidden mode.

    Phases: hover above the can, descend to grasp height, close, lift, carry above the
    target quadrant, lower, open and rise.

    Modes:
      * ``"careful"``: grasps the can at its axis.
      * ``"offset"``: a calibration error shifts the grasp point by ``offset_m`` along
        ``offset_axis`` (the finger-closing axis by default), so one finger comes down on
        the can's rim instead of beside it; the grasp then usually slips or misses.
    Both modes add Gaussian noise (``noise_std``) to the translation/rotation inputs.
    Call ``start_episode()``, ``begin_episode(seed)`` or ``reset(rng)`` before each episode.
    """

    APPROACH, DESCEND, CLOSE, LIFT, CARRY, LOWER, RELEASE = (
        "approach", "descend", "close", "lift", "carry", "lower", "release")

    def __init__(
        self,
        p_offset: float = 0.5,
        offset_m: float = 0.025,
        offset_axis: int = 1,
        offset_sign: Optional[int] = 1,
        noise_std: float = 0.05,
        gain: float = 10.0,
        hover_height: float = 0.08,
        grasp_depth: float = 0.0,
        close_steps: int = 8,
        carry_z: float = 1.05,
        place_z: float = 0.93,
        target_xy: tuple = TARGET_XY,
        obs_names: Optional[list] = None,
        seed: int = 0,
    ):
        self.carry_z = carry_z
        self.place_z = place_z
        self.target_xy = np.asarray(target_xy, dtype=np.float64)
        super().__init__(list(obs_names) if obs_names is not None else OBS_NAMES, "can", p_offset, offset_m,
                         offset_axis, offset_sign, hover_height, grasp_depth, close_steps, noise_std, gain, seed)

    def _begin(self) -> None:
        self.phase = self.APPROACH
        self.grasp_target = None

    def act(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        eef, quat, can = obs[self._i_eef], obs[self._i_quat], obs[self._i_obj]
        place = np.array([self.target_xy[0], self.target_xy[1], self.carry_z])

        gripper = -1.0
        if self.phase == self.APPROACH:
            target = can + self.offset + np.array([0.0, 0.0, self.hover_height])
            err = target - eef
            if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.02 or self.phase_t > 60:
                self.grasp_target = can + self.offset + np.array([0.0, 0.0, self.grasp_depth])
                self._set_phase(self.DESCEND)
        if self.phase == self.DESCEND:
            target = self.grasp_target
            if abs(target[2] - eef[2]) < 0.008 or self.phase_t > 30:
                self._set_phase(self.CLOSE)
        if self.phase == self.CLOSE:
            target, gripper = self.grasp_target, 1.0
            if self.phase_t >= self.close_steps:
                self._set_phase(self.LIFT)
        if self.phase == self.LIFT:
            target, gripper = np.array([eef[0], eef[1], self.carry_z]), 1.0
            if eef[2] > self.carry_z - 0.03 or self.phase_t > 30:
                self._set_phase(self.CARRY)
        if self.phase == self.CARRY:
            target, gripper = place, 1.0
            if np.linalg.norm((place - eef)[:2]) < 0.02 or self.phase_t > 60:
                self._set_phase(self.LOWER)
        if self.phase == self.LOWER:
            target, gripper = np.array([place[0], place[1], self.place_z]), 1.0
            if eef[2] < self.place_z + 0.015 or self.phase_t > 30:
                self._set_phase(self.RELEASE)
        if self.phase == self.RELEASE:
            # robosuite counts the can as placed only once the hand is away from it: open, then rise.
            target = np.array([place[0], place[1], self.place_z if self.phase_t < 4 else self.carry_z])
        self.phase_t += 1
        return self.servo(target, eef, quat, gripper)

"""robosuite Lift (Panda, OSC_POSE) as a gymnasium env (``steer/Lift-v0``), plus an imperfect scripted expert.

The DSRL paper's own setting. The robosuite plumbing (action, reward, seeding, servo) is
in :mod:`steer.sim.robosuite_env`; this module holds what is Lift's own.

Observation (float32, 15-D, names in ``LiftEnv.obs_names``):
    eef_pos (3), eef_quat (4, xyzw), gripper_qpos (2), cube_pos (3),
    cube_rel_eef (3, cube_pos - eef_pos).
Success: the cube is lifted (robosuite ``_check_success``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from steer.sim.robosuite_env import POS_SCALE, ROT_SCALE, RobosuiteTaskEnv, ScriptedOperator, flatten

OBS_NAMES = [
    "eef_pos_x", "eef_pos_y", "eef_pos_z",
    "eef_quat_x", "eef_quat_y", "eef_quat_z", "eef_quat_w",
    "gripper_qpos_0", "gripper_qpos_1",
    "cube_pos_x", "cube_pos_y", "cube_pos_z",
    "cube_rel_eef_x", "cube_rel_eef_y", "cube_rel_eef_z",
]

_OBS_KEYS = [
    ("robot0_eef_pos", 3),
    ("robot0_eef_quat", 4),
    ("robot0_gripper_qpos", 2),
    ("cube_pos", 3),
    ("gripper_to_cube_pos", 3),
]

__all__ = ["OBS_NAMES", "LiftEnv", "LiftExpert", "POS_SCALE", "ROT_SCALE"]


class LiftEnv(RobosuiteTaskEnv):
    """``robosuite.make("Lift", robots="Panda", ...)`` as a gymnasium env (see :class:`RobosuiteTaskEnv`)."""

    ROBOSUITE_ENV = "Lift"
    OBS_NAMES = OBS_NAMES

    def __init__(self, max_steps: int = 120, hard_reset: bool = False, build_seed: int = 0):
        super().__init__(max_steps=max_steps, hard_reset=hard_reset, build_seed=build_seed)

    def _observe(self, obs_dict: dict) -> np.ndarray:
        return flatten(obs_dict, _OBS_KEYS)


class LiftExpert(ScriptedOperator):
    """Scripted pick-and-lift operator with a per-episode hidden mode.

    Modes:
      * ``"careful"``: aims the grasp at the cube centre.
      * ``"offset"``: a calibration error shifts the grasp point by ``offset_m`` along
        ``offset_axis`` (always towards ``offset_sign``; ``None`` draws the sign per
        episode). With the default 2.4 cm along y (the finger-closing axis) one finger
        lands on the cube's top edge, the hand stops ~2 cm high, and on closing the
        fingers usually slide off the cube (success ~10%, vs ~100% when careful).
    Both modes add Gaussian noise (``noise_std``) to the translation/rotation inputs.
    Call ``start_episode()``, ``begin_episode(seed)`` or ``reset(rng)`` before each episode.
    """

    # phase names
    APPROACH, DESCEND, CLOSE, LIFT = "approach", "descend", "close", "lift"

    def __init__(
        self,
        p_offset: float = 0.5,
        offset_m: float = 0.024,
        offset_axis: int = 1,
        offset_sign: Optional[int] = 1,
        noise_std: float = 0.05,
        gain: float = 10.0,
        hover_height: float = 0.06,
        grasp_depth: float = 0.0,
        close_steps: int = 8,
        lift_height: float = 0.15,
        obs_names: Optional[list] = None,
        seed: int = 0,
    ):
        self.lift_height = lift_height
        super().__init__(list(obs_names) if obs_names is not None else OBS_NAMES, "cube", p_offset, offset_m,
                         offset_axis, offset_sign, hover_height, grasp_depth, close_steps, noise_std, gain, seed)

    def _begin(self) -> None:
        self.phase = self.APPROACH
        self.grasp_target = None
        self.lift_z = None

    def act(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        eef = obs[self._i_eef]
        quat = obs[self._i_quat]
        cube = obs[self._i_obj]

        gripper = -1.0
        if self.phase == self.APPROACH:
            target = cube + self.offset + np.array([0.0, 0.0, self.hover_height])
            err = target - eef
            if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.02 or self.phase_t > 60:
                self.grasp_target = cube + self.offset + np.array([0.0, 0.0, self.grasp_depth])
                self._set_phase(self.DESCEND)
        if self.phase == self.DESCEND:
            target = self.grasp_target
            err = target - eef
            if abs(err[2]) < 0.008 or self.phase_t > 30:
                self._set_phase(self.CLOSE)
        if self.phase == self.CLOSE:
            target = self.grasp_target
            gripper = 1.0
            if self.phase_t >= self.close_steps:
                self.lift_z = self.grasp_target[2] + self.lift_height
                self._set_phase(self.LIFT)
        if self.phase == self.LIFT:
            target = np.array([self.grasp_target[0], self.grasp_target[1], self.lift_z])
            gripper = 1.0
        self.phase_t += 1
        return self.servo(target, eef, quat, gripper)

"""Gymnasium interfaces: the native :class:`DriveVectorEnv` and the single :class:`DriveEnv` (``steer/Drive-v0``).

Observation (Dict), chosen by :attr:`DriveEnvConfig.obs`: ``vector`` float32 [D] (the structured
observation of :mod:`steer.driving.observation`), ``bev`` uint8 [C, H, W] (see
:data:`~steer.driving.bev.BEV_CHANNELS`), or both; always ``measurements`` float32 [M] (see
:data:`MEASUREMENTS`) and ``value_inputs`` float32 [K] (see :data:`VALUE_INPUTS`; privileged, meant
for the critic only). ``env.metadata["obs_fields"]`` names every entry of each 1-D key and the BEV's
channels. Action: float32 [2] = [steer, accel] in [-1, 1]. Reward: ``"carl"`` (default) or ``"roach"``.

The vector env resets finished sub-envs in the same step (gymnasium's SAME_STEP autoreset): the
returned observation of such an env is the first of its new episode, ``infos["_final_obs"]`` marks
those envs and ``infos["final_obs"]`` holds their last observations, one row per marked env in env
order. Every other info key is an array [N] about the step just taken (for a finished env, about the
end of its episode): ``route_completion`` (0..1), ``distance_driven`` (m), ``speed`` (m/s),
``outside_route_lanes``, ``ttc_violation``, ``finished`` (route done: truncation), the infraction
flags of :data:`~steer.driving.simulator.INFRACTIONS`, ``driving_score`` (the route's score so far,
see :mod:`steer.driving.score`: at an episode's last step, the episode's score), ``episode_return``
and ``episode_length``. After ``reset(options={"expert_labels": True})`` (until a reset with False) the
infos of reset and step also hold ``expert_action`` [N, 2]: the scripted driver's action for the
returned observation (labels for imitation), and ``expert_focus`` [N] (float 0/1): 1 where that driver
reacts to something on its route (passes a static obstacle, brakes for a vehicle or a pedestrian),
the rare states an imitation may weigh up. ``env.metadata`` lists what a trainer needs to summarize episodes without
knowing the simulator: ``infractions``, ``episode_metrics`` and ``distance_info``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from steer.driving.bev import BEV_CHANNELS, BevConfig, BevRenderer, bev_to_rgb
from steer.driving.observation import VectorObsConfig, VectorObservation
from steer.driving.roadmap import LIGHT_RED
from steer.driving.rewards import CarlRewardConfig, RewardState, RoachRewardConfig, carl_reward, roach_reward
from steer.driving.score import driving_score
from steer.driving.simulator import INFRACTIONS, DrivingSim, SimConfig, build_world

MEASUREMENTS = ("speed", "speed_limit")
"""Measurement vector: speed and speed limit in units of 10 m/s. The policy's own last action is not
among them (nor in the vector observation): a driver imitated with it learns to repeat it (the
"copycat" shortcut, Wen et al. 2020: labels change slowly, so the last action predicts the next one
better than the scene does) and then holds speed where the scripted driver brakes for a pedestrian,
or drives straight where it steers round a parked car. Single runs of the DAgger warm start drove
100 held-out routes to 0.79 route completion with it and 0.87 without (another initialization of the
same setting gave 0.77: single runs are noisy); with three seeds of the whole trainer the held-out
figure rose from 0.738 to 0.800. The critic still sees it (``VALUE_INPUTS``)."""

VALUE_INPUTS = ("time_left", "route_left", "blocked_time", "distance_left", "last_steer", "last_accel")
"""Value-only inputs: share of the time budget left, share of the route left, share of the blocked
limit spent, route metres left / 500, and the last action (normalized)."""

REWARDS = ("carl", "roach")
"""Selectable rewards."""

OBSERVATIONS = ("vector", "bev", "both", "none")
"""Selectable observations: the structured vector, the BEV raster, both, or neither (measurements only)."""


@dataclass(frozen=True)
class DriveEnvConfig:
    """Configuration of the driving envs."""

    sim: SimConfig = field(default_factory=SimConfig)
    """Simulator and world."""
    bev: BevConfig = field(default_factory=BevConfig)
    """BEV raster size and resolution."""
    obs: str = "vector"
    """Observation: ``vector`` (structured floats; the CPU default), ``bev`` (CaRL's raster; the GPU
    path), ``both``, or ``none`` (measurements and value inputs only, for benchmarks)."""
    vector: VectorObsConfig = field(default_factory=VectorObsConfig)
    """Layout of the vector observation."""
    reward: str = "carl"
    """``"carl"`` or ``"roach"``."""
    carl: CarlRewardConfig = field(default_factory=CarlRewardConfig)
    """CaRL reward constants."""
    roach: RoachRewardConfig = field(default_factory=RoachRewardConfig)
    """Roach reward constants."""
    light_start: float = field(default=0.0, metadata={"range": "[0, 1]"})
    """Share of episodes that start shortly before a stop line of their route (a training curriculum:
    stopping for a red light and waiting it out is rare under a random policy; evaluation keeps 0)."""
    light_start_m: tuple[float, float] = (2.0, 40.0)
    """Range of the bumper-to-line distance of those starts, metres."""
    light_start_red: float = field(default=0.5, metadata={"range": "[0, 1]"})
    """Share of those starts whose light is red at the start (else the light keeps its random phase)."""
    light_start_brake: float = 4.0
    """Those starts are no faster than stopping before the line at this deceleration allows, m/s^2."""
    light_start_standing: float = field(default=0.3, metadata={"range": "[0, 1]"})
    """Share of those starts standing (the others at a random speed up to that bound): waiting out a
    red light is learned first from standing starts."""


class DriveConfigError(ValueError):
    """A driving-env option the user set is not valid."""

    user_facing = True


def check_env_config(config: DriveEnvConfig) -> None:
    """One-sentence :class:`DriveConfigError` for env options that cannot work (the trainer calls it
    before it starts any process)."""
    if config.reward not in REWARDS:
        raise DriveConfigError(f"unknown reward {config.reward!r}; choose one of {', '.join(REWARDS)}.")
    if config.obs not in OBSERVATIONS:
        raise DriveConfigError(f"unknown observation {config.obs!r}; choose one of {', '.join(OBSERVATIONS)}.")
    span = tuple(config.vector.route_frame_m)
    if len(span) != 2 or not span[0] <= 0.0 < span[1]:
        raise DriveConfigError(f"--ppo.env.vector.route-frame-m takes two numbers, metres behind (at most 0) and "
                               f"ahead (more than 0) of the ego, e.g. -8 72; got {list(span)}.")


@functools.lru_cache(maxsize=4)
def _cached_world(cfg: SimConfig):
    return build_world(cfg)


class DriveVectorEnv(VectorEnv):
    """``num_envs`` driving episodes stepped together by one numpy simulator."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 8, config: DriveEnvConfig = DriveEnvConfig(), reward: str | None = None,
                 autoreset: bool = True, sim: DrivingSim | None = None):
        if reward is not None:
            config = dataclasses.replace(config, reward=reward)
        check_env_config(config)
        self.config = config
        self.num_envs = num_envs
        self.autoreset = autoreset
        # A backend (e.g. SUMO) passes its own sim with the same state arrays.
        self.sim = sim if sim is not None else DrivingSim(num_envs, config.sim, world=_cached_world(config.sim))
        self.bev = BevRenderer(self.sim, config.bev) if config.obs in ("bev", "both") else None
        self.vector = VectorObservation(self.sim, config.vector) if config.obs in ("vector", "both") else None
        self._painter = None  # a BEV drawn for render() alone when the observation has none
        obs = {}
        fields: dict[str, list[str]] = {}
        if self.vector is not None:
            obs["vector"] = spaces.Box(-10.0, 10.0, (self.vector.size,), np.float32)
            fields["vector"] = self.vector.field_names()
        if self.bev is not None:
            obs["bev"] = spaces.Box(0, 255, self.bev.shape, np.uint8)
            fields["bev"] = list(BEV_CHANNELS)
        obs["measurements"] = spaces.Box(-10.0, 10.0, (len(MEASUREMENTS),), np.float32)
        obs["value_inputs"] = spaces.Box(-10.0, 10.0, (len(VALUE_INPUTS),), np.float32)
        fields.update(measurements=list(MEASUREMENTS), value_inputs=list(VALUE_INPUTS))
        self.single_observation_space = spaces.Dict(obs)
        self.metadata = {**type(self).metadata, "obs_fields": fields, "infractions": INFRACTIONS,
                         "episode_metrics": ("route_completion", "driving_score"), "distance_info": "distance_driven",
                         "control_rate_hz": 1.0 / config.sim.dt}
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(config.sim.seed)
        self.expert_labels = False  # infos["expert_action"]: the scripted driver's action for the returned obs
        self._expert = None
        self._return = np.zeros(num_envs)
        self._done = np.zeros(num_envs, bool)

    # ------------------------------------------------------------------
    def observe(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Observations of envs ``idx`` (all when None)."""
        sim = self.sim
        idx = np.arange(self.num_envs) if idx is None else np.asarray(idx, np.int64)
        r = sim.route[idx]
        pool = sim.pool
        meas = np.empty((len(idx), len(MEASUREMENTS)), np.float32)
        meas[:, 0] = sim.v[idx] / 10.0
        meas[:, 1] = pool.speed_limit[r, sim.seg[idx]] / 10.0
        val = np.empty((len(idx), len(VALUE_INPUTS)), np.float32)
        val[:, 0] = 1.0 - sim.t[idx] / sim.time_limit[idx]
        val[:, 1] = 1.0 - sim.s[idx] / pool.length[r]
        val[:, 2] = sim.blocked_t[idx] / sim.cfg.blocked_s
        val[:, 3] = (pool.length[r] - sim.s[idx]) / 500.0
        val[:, 4:6] = sim.last_action[idx]
        obs = {}
        if self.vector is not None:
            obs["vector"] = self.vector(idx)
        if self.bev is not None:
            obs["bev"] = self.bev.render(idx)
        obs.update(measurements=meas, value_inputs=val)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset all envs (or those in ``options["reset_mask"]``); a seed makes the episodes reproducible."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.sim.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        if options is not None and "expert_labels" in options:
            self.expert_labels = bool(options["expert_labels"])
        mask = None if options is None else options.get("reset_mask")
        idx = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        routes = None if options is None else options.get("routes")
        self._reset_envs(idx, routes)
        self._return[idx] = 0.0
        self._done[idx] = False
        return self.observe(), (self._expert_labels() if self.expert_labels else {})

    def _expert_labels(self) -> dict[str, np.ndarray]:
        """The scripted driver's actions [N, 2] in the current state and where it reacts to something
        (``expert_action``, ``expert_focus``: labels for imitation)."""
        if self._expert is None:
            from steer.driving.expert import ExpertDriver

            self._expert = ExpertDriver(self.sim)
        action = self._expert.act()
        return {"expert_action": action, "expert_focus": self._expert.reacting.astype(np.float32)}

    def _reset_envs(self, idx: np.ndarray, routes: np.ndarray | None = None) -> None:
        """New episodes in envs ``idx``; without given routes a ``light_start`` share starts before a stop line."""
        cfg, sim, rng = self.config, self.sim, self._rng
        if cfg.light_start <= 0 or routes is not None or len(idx) == 0:
            sim.reset_envs(idx, rng, routes=routes)
            return
        pool, m = sim.pool, sim.map
        r = rng.integers(0, pool.n_routes, len(idx))
        n_stop = np.isfinite(pool.stop_s[r]).sum(1)
        pick = (rng.random(len(idx)) < cfg.light_start) & (n_stop > 0)
        k = (rng.random(len(idx)) * np.maximum(n_stop, 1)).astype(np.int64)
        line = pool.stop_s[r, k]
        gap = rng.uniform(*cfg.light_start_m, len(idx))
        s0 = np.where(pick, np.maximum(line - sim.cfg.vehicle_length / 2.0 - gap, 0.0), 0.0)
        i0 = np.minimum((s0 / pool.spacing[r]).astype(np.int64), pool.n[r] - 1)
        v_max = np.minimum(pool.comfort_speed[r, i0], np.sqrt(2.0 * cfg.light_start_brake * gap))
        moving = rng.random(len(idx)) >= cfg.light_start_standing
        v0 = np.where(pick & moving, rng.random(len(idx)) * v_max, 0.0)
        sim.reset_envs(idx, rng, routes=r, start_s=s0, start_v=v0)
        # Turn a share of those lights red: of a few random phase offsets, keep the first that shows red.
        red = pick & (rng.random(len(idx)) < cfg.light_start_red) & (pool.stop_light[r, k] >= 0)
        if red.any():
            e, li = idx[red], pool.stop_light[r[red], k[red]]
            cand = rng.uniform(0.0, 1000.0, (len(e), 16))
            st = m.light_state(li[:, None], np.zeros_like(cand), cand)
            ok = st == LIGHT_RED
            has = ok.any(1)
            grp = m.light_group[li]
            sim.group_offset[e[has], grp[has]] = cand[has, np.argmax(ok[has], 1)]

    def step(self, actions):
        """Step all envs with actions [N, 2]; finished envs are reset in the same step."""
        sim, cfg = self.sim, self.config
        actions = np.asarray(actions, np.float32).reshape(self.num_envs, 2)
        prev_steer = sim.last_action[:, 0].copy()
        res = sim.step(actions)
        infr = res.infractions
        # Collisions and the two rule infractions (red light, stop sign) take the terminal penalty.
        coll_red = (infr["collision_vehicle"] | infr["collision_static"] | infr["collision_pedestrian"] | infr["red_light"]
                    | infr["stop_sign"])
        if cfg.reward == "roach":
            vgap, _, lgap, _ = sim.route_hazards()
        else:
            vgap = lgap = np.full(self.num_envs, np.inf)
            if cfg.carl.light_brake > 0:  # the stop line ahead when the ego must stop there (light, sign, yield)
                _, _, _, dist, may_enter = sim.next_junction()
                lgap = np.where(may_enter, np.inf, dist)
        st = RewardState(res.progress_pct, res.outside_route_lanes, sim.v, res.speed_limit, res.ttc_violation,
                         res.comfort_violations, res.lateral, res.lane_width, res.heading_error,
                         np.abs(actions[:, 0] - prev_steer), vgap, lgap, res.terminated, coll_red,
                         100.0 * (1.0 - res.route_completion))
        reward = carl_reward(st, cfg.carl) if cfg.reward == "carl" else roach_reward(st, cfg.roach)
        terminated = res.terminated.copy()
        truncated = res.finished.copy()
        self._return += reward
        infos = {
            "route_completion": res.route_completion.copy(),
            "distance_driven": sim.distance.copy(),
            "speed": sim.v.copy(),
            "outside_route_lanes": res.outside_route_lanes,
            "ttc_violation": res.ttc_violation,
            "finished": res.finished,
            **{k: v.copy() for k, v in infr.items()},
            "driving_score": driving_score(res.route_completion, infr),
            "episode_return": self._return.copy(),
            "episode_length": sim.steps.copy(),
        }
        done = terminated | truncated
        if self.autoreset:
            idx = np.flatnonzero(done)
            infos["_final_obs"] = done
            if len(idx):
                infos["final_obs"] = self.observe(idx)
                self._reset_envs(idx)
                self._return[idx] = 0.0
        obs = self.observe()
        if self.expert_labels:
            infos.update(self._expert_labels())
        return obs, reward.astype(np.float32), terminated, truncated, infos

    def render(self):
        """RGB picture of env 0's BEV (drawn for the picture alone when the observation has none)."""
        if self.bev is None:
            if self._painter is None:
                self._painter = BevRenderer(self.sim, self.config.bev)
            return bev_to_rgb(self._painter.render(np.array([0]))[0], self.config.bev.ego_from_bottom)
        return bev_to_rgb(self.bev.render(np.array([0]))[0], self.config.bev.ego_from_bottom)


class DriveEnv(gym.Env):
    """One driving episode at a time (``steer/Drive-v0``); same observations, actions and rewards."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: DriveEnvConfig = DriveEnvConfig(), reward: str | None = None,
                 render_mode: str | None = None):
        self.venv = DriveVectorEnv(1, config, reward=reward, autoreset=False)
        self.observation_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; the same seed gives the same route, traffic and lights."""
        super().reset(seed=seed)
        obs, _ = self.venv.reset(seed=seed, options=options)
        return {k: v[0] for k, v in obs.items()}, self._info()

    def _info(self, infos: dict | None = None) -> dict:
        if infos is None:
            return {"route_completion": 0.0}
        return {k: (v[0].item() if isinstance(v, np.ndarray) else v) for k, v in infos.items()}

    def step(self, action):
        """One step; after termination or truncation call reset."""
        obs, r, term, trunc, infos = self.venv.step(np.asarray(action, np.float32)[None])
        return {k: v[0] for k, v in obs.items()}, float(r[0]), bool(term[0]), bool(trunc[0]), self._info(infos)

    def render(self):
        """RGB picture of the BEV when ``render_mode="rgb_array"``."""
        if self.render_mode == "rgb_array":
            return self.venv.render()
        return None

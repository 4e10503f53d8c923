"""Small driving worlds and PPO configs shared by the PPO tests (a helper module: no tests here)."""

from steer.agent.ppo_config import NetConfig, PPOConfig, WarmStartConfig
from steer.driving import BevConfig, DriveEnvConfig, SimConfig, TownConfig

TINY_NET = NetConfig(cnn_channels=(8, 16), bev_features=64, measurement_features=32, vector_layers=(64,), hidden=64,
                     value_hidden=64)
"""A network small enough to train in seconds on one core."""


def short_route_env(n_npcs: int = 2, seed: int = 3) -> DriveEnvConfig:
    """One 3 x 3 town, 40-60 m routes, the vector observation (and a 32 x 32 BEV at 0.5 px/m with ``obs="bev"``)."""
    sim = SimConfig(seed=seed, n_towns=1, routes_per_town=16, town=TownConfig(nx=3, ny=3, drop_road_prob=0.0),
                    route_min_length=40.0, route_max_length=60.0, n_npcs=n_npcs, timeout_base_s=10.0)
    return DriveEnvConfig(sim=sim, bev=BevConfig(size=32, pixels_per_meter=0.5, ego_from_bottom=12))


def tiny_ppo_config(**overrides) -> PPOConfig:
    """PPO over :func:`short_route_env` with :data:`TINY_NET`."""
    base = dict(num_envs=32, num_steps=32, minibatch_size=256, learning_rate=1e-3, total_timesteps=10_240,
                checkpoint_every=1, net=TINY_NET, env=short_route_env(), warm_start=WarmStartConfig())
    return PPOConfig(**{**base, **overrides})

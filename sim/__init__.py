"""steer.sim: MuJoCo tasks as gymnasium envs, scripted experts, demonstrations."""

import gymnasium as _gym

if "steer/PlanarPush-v0" not in _gym.registry:
    _gym.register(id="steer/PlanarPush-v0", entry_point="steer.sim.push:PlanarPushEnv", max_episode_steps=None)
if "steer/Lift-v0" not in _gym.registry:
    # robosuite is imported when the env is made, not here: importing it takes seconds.
    _gym.register(id="steer/Lift-v0", entry_point="steer.sim.robosuite_lift:LiftEnv", max_episode_steps=None)
if "steer/Can-v0" not in _gym.registry:
    _gym.register(id="steer/Can-v0", entry_point="steer.sim.robosuite_can:CanEnv", max_episode_steps=None)

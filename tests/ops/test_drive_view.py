import numpy as np
import pytest
import torch

from steer.agent.checkpoint import save_checkpoint
from steer.agent.ppo_config import PPOConfig
from steer.agent.ppo import make_model, policy_meta
from steer.driving import DriveEnvConfig, DriveVectorEnv, SimConfig
from steer.driving.simulator import INFRACTIONS
from steer.ops.drive_cmd import DriveViewConfig, DriveViewError, view
from steer.ops.drive_stages import ended_by, view_episode


def test_view_drives_with_a_trained_ppo_policy(tmp_path, capsys):
    # A one-town world to build the policy's spaces quickly; the view drives in its own town.
    cfg = PPOConfig(env=DriveEnvConfig(sim=SimConfig(n_towns=1, routes_per_town=2)))
    env = DriveVectorEnv(1, cfg.env)
    torch.manual_seed(0)
    model = make_model(env.single_observation_space, cfg.net)
    save_checkpoint(tmp_path / "run" / "checkpoints", "last", {"model": model.state_dict()},
                    {"update": 1, "global_step": 1, **policy_meta(env, cfg)})
    assert view(DriveViewConfig(out=str(tmp_path / "v"), policy=str(tmp_path / "run"), steps=6, frames=True)) == 0
    frames = sorted((tmp_path / "v").glob("frame_*.png"))
    assert 1 <= len(frames) <= 6 and (tmp_path / "v" / "episode.gif").exists()
    out = capsys.readouterr().out
    assert "route completion" in out and "ended by: " in out
    with pytest.raises(DriveViewError, match="run directory"):
        view(DriveViewConfig(out=str(tmp_path / "w"), policy=str(tmp_path / "nothing")))


def test_view_names_what_ended_the_episode():
    infos = {"finished": np.array([False, True]), **{k: np.zeros(2, bool) for k in INFRACTIONS}}
    infos["red_light"][0] = True
    assert ended_by(infos, INFRACTIONS, 0) == "red_light" and ended_by(infos, INFRACTIONS, 1) == "finished"
    infos["red_light"][0] = False
    assert ended_by(infos, INFRACTIONS, 0) == "step_limit"
    # The scripted driver finishes its route in the view's town; frames stop at the end.
    ep = view_episode(DriveViewConfig(policy="expert", steps=2000, bev_size=32, frames=False, gif=False))
    assert ep.ended_by == "finished" and ep.route_completion == 1.0 and len(ep.pictures) < 2000
    assert ep.frame_ms == 100

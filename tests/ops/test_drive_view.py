import dataclasses

import pytest
import torch

from steer.agent.checkpoint import save_checkpoint
from steer.agent.ppo_config import PPOConfig
from steer.agent.ppo_nets import CarlActorCritic
from steer.driving import MEASUREMENTS, VALUE_INPUTS
from steer.ops.drive_cmd import DriveViewConfig, DriveViewError, view


def test_view_drives_with_a_trained_ppo_policy(tmp_path, capsys):
    cfg = PPOConfig()
    b = cfg.env.bev
    shape = (8, b.size, b.size)
    torch.manual_seed(0)
    model = CarlActorCritic(shape, len(MEASUREMENTS), len(VALUE_INPUTS), 2, cfg.net)
    save_checkpoint(tmp_path / "run" / "checkpoints", "last", {"model": model.state_dict()},
                    {"update": 1, "global_step": 1, "bev_shape": list(shape), "ppo_config": dataclasses.asdict(cfg)})
    assert view(DriveViewConfig(out=str(tmp_path / "v"), policy=str(tmp_path / "run"), steps=6, frames=True)) == 0
    frames = sorted((tmp_path / "v").glob("frame_*.png"))
    assert 1 <= len(frames) <= 6 and (tmp_path / "v" / "episode.gif").exists()
    assert "route completion" in capsys.readouterr().out
    with pytest.raises(DriveViewError, match="run directory"):
        view(DriveViewConfig(out=str(tmp_path / "w"), policy=str(tmp_path / "nothing")))

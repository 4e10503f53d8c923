"""PPO's helpers: minibatch indices and configs rebuilt from their JSON."""

import dataclasses
import json

import torch

from steer.agent.ppo import config_from_dict, minibatch_indices
from steer.agent.ppo_config import LagrangianConfig, NetConfig, PPOConfig


def test_minibatch_indices_cover_every_sample_once_per_epoch():
    mbs = minibatch_indices(10, 4, 3, torch.Generator().manual_seed(0))
    assert [len(m) for m in mbs] == [4, 4, 2] * 3  # the last minibatch of an epoch holds the rest
    for epoch in range(3):
        seen = torch.cat(mbs[3 * epoch : 3 * epoch + 3])
        assert sorted(seen.tolist()) == list(range(10))
    # Each epoch draws its own permutation; the same generator seed gives the same minibatches.
    assert len({tuple(torch.cat(mbs[3 * e : 3 * e + 3]).tolist()) for e in range(3)}) > 1
    again = minibatch_indices(10, 4, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(mbs, again))



def test_config_round_trips_through_json_with_nested_dataclasses_and_tuples():
    cfg = PPOConfig(num_envs=3, learning_rate=1e-3, net=NetConfig(cnn_channels=(4, 8), hidden=32),
                    lagrangian=LagrangianConfig(enabled=True, lambda_init=0.25))
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert data["net"]["cnn_channels"] == [4, 8]  # JSON turned the tuple into a list
    back = config_from_dict(PPOConfig, data)
    assert back == cfg
    assert isinstance(back.net, NetConfig) and back.net.cnn_channels == (4, 8)
    hash(back)  # frozen and hashable again


def test_config_from_an_older_run_keeps_the_defaults_of_fields_it_lacks():
    data = json.loads(json.dumps(dataclasses.asdict(PPOConfig(num_envs=5))))
    del data["learning_rate"], data["net"]["hidden"]
    data["a_field_since_removed"] = 1
    back = config_from_dict(PPOConfig, data)
    assert back.num_envs == 5
    assert back.learning_rate == PPOConfig().learning_rate and back.net.hidden == NetConfig().hidden

"""DistributedDataParallel: 2 CPU processes (gloo, loopback) train exactly as one process on the
combined batch, and the full trainer runs with one set of envs per rank."""

import dataclasses
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steer.agent.ppo import Batch, ppo_update
from steer.agent.ppo_config import NetConfig, PPOConfig
from steer.agent.ppo_nets import CarlActorCritic

NET = NetConfig(cnn_channels=(4, 8), bev_features=16, measurement_features=8, hidden=16, value_hidden=8)
CFG = PPOConfig(learning_rate=1e-3, update_epochs=2)
HALF, MINIBATCHES = 24, 3  # per rank: 24 samples, 3 minibatches of 8 per epoch


def _model():
    torch.manual_seed(0)
    return CarlActorCritic({"bev": (2, 16, 16), "measurements": (4,), "value_inputs": (4,)}, 2, NET)


def _combined_batch():
    """2 * HALF samples with returns and advantages of different scales, so that normalization matters."""
    model = _model()
    g = torch.Generator().manual_seed(1)
    n = 2 * HALF
    bev = torch.randint(0, 256, (n, 2, 16, 16), generator=g, dtype=torch.uint8)
    meas, vin = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    with torch.no_grad():
        obs = {"bev": bev, "measurements": meas, "value_inputs": vin}
        x, logp, _, value = model(obs)
    adv = torch.randn(n, generator=g) * torch.linspace(0.5, 3.0, n) + 1.0
    return Batch(obs, x, logp, adv, value + 2 * torch.randn(n, generator=g), value)


def _local_minibatches(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(CFG.update_epochs):
        perm = torch.randperm(HALF, generator=g)
        out += list(perm.split(HALF // MINIBATCHES))
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from torch.nn.parallel import DistributedDataParallel

        model = _model()
        ddp = DistributedDataParallel(model)
        opt = torch.optim.Adam(model.parameters(), lr=CFG.learning_rate, eps=CFG.adam_eps)
        full = _combined_batch()
        local = full.take(torch.arange(rank * HALF, (rank + 1) * HALF))
        ppo_update(ddp, opt, local, _local_minibatches(rank), CFG)
        if rank == 0:
            torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(out_dir, "ddp.pt"))
        # The whole trainer on the BEV (CaRL's GPU path): one env per rank, one update, a checkpoint
        # written by rank 0 only.
        from steer.agent.ppo import train_ppo
        from steer.agent.runlog import MemoryLog
        from ppo_worlds import tiny_ppo_config

        from steer.agent.ppo_config import LagrangianConfig

        log = MemoryLog(os.path.join(out_dir, "ckpt"))
        # With PPO-Lag on: its cost statistics are summed over ranks too (a missing collective would hang).
        bev_env = dataclasses.replace(tiny_ppo_config().env, obs="bev")
        res = train_ppo(tiny_ppo_config(num_envs=2, num_steps=8, minibatch_size=8, total_timesteps=16, env=bev_env,
                                        lagrangian=LagrangianConfig(enabled=True, lambda_init=0.5)), log)
        if rank == 0:
            with open(os.path.join(out_dir, "train.json"), "w") as f:
                json.dump({"global_step": res.global_step, "records": len(log.records),
                           "lambda": log.records[0]["lagrangian/lambda"]}, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ddp_processes_equal_one_process_on_the_combined_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp_state = torch.load(tmp_path / "ddp.pt")

    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=CFG.learning_rate, eps=CFG.adam_eps)
    # Minibatch k of the single process = rank 0's minibatch k + rank 1's (offset by HALF).
    combined = [torch.cat([a, b + HALF]) for a, b in zip(_local_minibatches(0), _local_minibatches(1))]
    ppo_update(model, opt, _combined_batch(), combined, CFG)
    single = model.state_dict()
    init = _model().state_dict()
    moved = max((single[k] - init[k]).abs().max().item() for k in single)
    assert moved > 1e-3  # the update did change the weights, so equality below is not trivial
    for k in single:
        torch.testing.assert_close(ddp_state[k], single[k], rtol=1e-5, atol=1e-6, msg=k)

    train = json.loads((tmp_path / "train.json").read_text())
    assert train == {"global_step": 16, "records": 1, "lambda": 0.5}  # no episode ended: λ stays
    assert (tmp_path / "ckpt" / "last.json").exists()

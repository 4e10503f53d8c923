"""A DSRL run keeps the actor of its best learning-curve evaluation (``DSRLConfig.keep_best``)."""

import numpy as np
import pytest
import torch

import steer.sim  # noqa: F401
from steer.agent.checkpoint import load_checkpoint
from steer.agent.dsrl import DSRLConfig, train_dsrl
from steer.agent.dsrl.core import CURVE_SEED_BASE, LatentPolicyFn, Progress
from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig, load_dsrl_policy
from steer.agent.evaluate import evaluate_chunked
from steer.agent.runlog import MemoryLog

TASK = "steer/PlanarPush-v0"


def _weights_equal(a: LatentActor, b: LatentActor) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _constant_actor(policy, latent: np.ndarray) -> LatentActor:
    """An actor whose latent is ``latent``, whatever the observation."""
    pc = policy.cfg
    actor = LatentActor(LatentActorConfig(pc.obs_dim, pc.noise_dim, 16, 2, True, 1.5))
    with torch.no_grad():
        actor.mu.weight.zero_()
        actor.mu.bias.copy_(torch.as_tensor(np.arctanh(latent / 1.5), dtype=torch.float32))
    return actor.eval()


@pytest.mark.parametrize("algo", ["na", "sac"])
def test_the_kept_actor_is_the_best_curve_point_and_reproduces_it(algo, tiny_bc, tmp_path):
    policy, _ = tiny_bc
    log = MemoryLog(tmp_path / algo)
    cfg = DSRLConfig(algorithm=algo, env_steps=430, warmup_env_steps=150, utd=1, na_utd=1, na_distill_steps=1,
                     batch_size=16, eval_every=100, eval_episodes=4, checkpoint_every=10**6, lr=3e-3)
    _, details = train_dsrl(policy, TASK, cfg, log, progress=False)
    prog, sel = details["progress"], details["selection"]
    # Every curve point and the final actor (evaluated on the same episodes, unless a curve point sits there).
    candidates = [tuple(p[1:]) for p in prog.curve] + [(sel["final_curve_success"], None)]
    assert len(prog.curve) >= 2
    assert sel["selected_curve_success"] == max(s for s, _ in candidates)
    assert sel["selected"] == ("final" if sel["selected_env_steps"] == prog.env_steps else "best")
    # The kept weights give back their curve evaluation, and they are what the run saved.
    res = evaluate_chunked(TASK, LatentPolicyFn(policy, details["actor"]), 4, seed=CURVE_SEED_BASE)
    assert res.success_rate == sel["selected_curve_success"]
    assert [res.success_rate, res.return_mean] == pytest.approx(prog.best[1:])
    saved, _, meta = load_dsrl_policy(log.checkpoint_dir)
    assert _weights_equal(saved, details["actor"])
    assert meta["selected_env_steps"] == sel["selected_env_steps"] == prog.best[0]


def test_select_prefers_the_better_earlier_actor_and_off_returns_the_last(tiny_bc, tmp_path):
    """Of eight constant-latent actors, the best is evaluated at 100 env steps and the worst is left at the
    end (200 env steps); the run keeps the best with keep_best and the last without."""
    policy, _ = tiny_bc
    rng = np.random.default_rng(0)
    actors = [_constant_actor(policy, rng.uniform(-1.4, 1.4, policy.cfg.noise_dim)) for _ in range(8)]
    keys = [(r.success_rate, r.return_mean) for r in
            (evaluate_chunked(TASK, LatentPolicyFn(policy, a), 10, seed=CURVE_SEED_BASE) for a in actors)]
    hi, lo = int(np.argmax([k[0] for k in keys])), int(np.argmin([k[0] for k in keys]))
    assert keys[hi][0] > keys[lo][0]  # the BC policy succeeds with some latents and not with others
    for keep in (True, False):
        prog = Progress(DSRLConfig(eval_episodes=10, keep_best=keep), MemoryLog(tmp_path / str(keep)), policy, TASK,
                        progress=False)
        prog.env_steps = 100
        prog.curve.append(prog._evaluate(actors[hi]))
        prog.env_steps = 200
        chosen, sel = prog.select_actor(actors[lo])
        if keep:
            assert sel == {"selected": "best", "selected_env_steps": 100, "selected_curve_success": keys[hi][0],
                           "final_curve_success": keys[lo][0]}
            assert chosen is not actors[hi] and _weights_equal(chosen, actors[hi])
        else:
            assert chosen is actors[lo] and sel["selected"] == "final" and prog.tensors() == {}


def test_the_best_actor_survives_a_resume(tiny_bc, tmp_path):
    policy, _ = tiny_bc
    log = MemoryLog(tmp_path)
    base = dict(algorithm="sac", warmup_env_steps=150, utd=1, batch_size=16, eval_every=100, eval_episodes=4,
                checkpoint_every=100, lr=3e-3)
    _, first = train_dsrl(policy, TASK, DSRLConfig(env_steps=330, **base), log, progress=False)
    state, meta = load_checkpoint(log.checkpoint_dir, "dsrl_trainer")
    best = max(meta["curve"], key=lambda p: (p[1], p[2]))
    assert meta["best"][1:] == best[1:] and set(state["best_actor"]) == set(first["actor"].state_dict())
    restored = Progress(DSRLConfig(env_steps=330, **base), log, policy, TASK, False, meta, state)
    assert restored.best == meta["best"]
    assert all(torch.equal(restored.best_actor[k], state["best_actor"][k]) for k in state["best_actor"])
    _, details = train_dsrl(policy, TASK, DSRLConfig(env_steps=530, **base), log, resume=True, progress=False)
    curve = details["progress"].curve
    assert curve[:len(meta["curve"])] == meta["curve"]  # the first run's points are still candidates
    assert details["selection"]["selected_curve_success"] >= best[1]

import numpy as np
import pytest
import torch

from steer.agent.bc import load_policy, make_chunks
from steer.agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from steer.agent.diffusion import MinMaxNormalizer, cosine_alphas_cumprod, ddim_timesteps


def test_cosine_schedule_and_ddim_timesteps():
    acp = cosine_alphas_cumprod(20)
    assert acp.shape == (20,)
    assert torch.all(acp[1:] < acp[:-1])
    assert 0.99 < acp[0] <= 1.0 and acp[-1] < 0.01
    assert ddim_timesteps(20, 5) == [16, 12, 8, 4, 0]
    assert ddim_timesteps(20, 8) == [14, 12, 10, 8, 6, 4, 2, 0]
    with pytest.raises(ValueError):
        ddim_timesteps(20, 0)


def test_ddim_is_deterministic_given_noise(tiny_bc):
    policy, _ = tiny_bc
    obs = torch.randn(6, 10) * 0.1
    noise = torch.randn(6, 4, 2)
    a = policy.sample(obs, noise)
    b = policy.sample(obs, noise.clone())
    assert torch.equal(a, b)
    c = policy.sample(obs, torch.randn(6, 4, 2))
    assert (a - c).abs().max() > 1e-3


def test_chunk_shapes_and_shape_errors(tiny_bc):
    policy, _ = tiny_bc
    for batch in (1, 7):
        out = policy.sample(torch.zeros(batch, 10), torch.zeros(batch, 4, 2))
        assert out.shape == (batch, 4, 2)
    with pytest.raises(ValueError, match="obs must be"):
        policy.sample(torch.zeros(2, 9), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="noise must be"):
        policy.sample(torch.zeros(2, 10), torch.zeros(2, 8))


def test_actions_stay_within_the_demonstrated_range(tiny_bc):
    policy, _ = tiny_bc
    out = policy.sample(torch.randn(64, 10), torch.randn(64, 4, 2) * 3)
    assert torch.all(out >= policy.act_norm.low - 1e-5) and torch.all(out <= policy.act_norm.high + 1e-5)


def test_normalization_round_trip():
    low, high = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 10.0, 2.0])
    norm = MinMaxNormalizer(low, high)
    x = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 10.0, 2.0], [0.5, 2.5, 2.0]])
    y = norm.normalize(x)
    torch.testing.assert_close(y[0, :2], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(y[1, :2], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(y[2, :2], torch.tensor([0.5, -0.5]))
    assert torch.all(y[:, 2] == 0)  # a constant feature maps to the centre
    torch.testing.assert_close(norm.unnormalize(y), x)


def test_make_chunks_pads_with_last_action():
    obs = [np.arange(4, dtype=np.float32)[:, None].repeat(2, 1)]
    act = [np.array([[1, 1], [2, 2], [3, 3]], dtype=np.float32)]
    o, c = make_chunks(obs, act, 3)
    assert o.shape == (3, 2) and c.shape == (3, 3, 2)
    np.testing.assert_array_equal(c[1, :, 0], [2, 3, 3])
    np.testing.assert_array_equal(c[2, :, 0], [3, 3, 3])


def test_policy_checkpoint_round_trip_is_bit_exact(tiny_bc, tmp_path):
    policy, ckpt = tiny_bc
    loaded = load_policy(ckpt)
    for (k, a), (k2, b) in zip(policy.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    obs, noise = torch.randn(5, 10) * 0.1, torch.randn(5, 4, 2)
    assert torch.equal(policy.sample(obs, noise), loaded.sample(obs, noise))


def test_nested_state_with_optimizer_round_trips(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "arr": np.arange(5.0), "tup": (1, 2.5), "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path, "x", state, {"step": 7})
    back, meta = load_checkpoint(tmp_path, "x")
    assert meta == {"step": 7}
    opt2 = torch.optim.AdamW(net.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    np.testing.assert_array_equal(back["arr"], np.arange(5.0))
    assert back["tup"] == (1, 2.5)
    assert torch.equal(back["rng"], state["rng"])


def test_damaged_checkpoint_is_detected(tmp_path):
    save_checkpoint(tmp_path, "x", {"w": torch.ones(3)})
    path = tmp_path / "x.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path, "x")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path, "missing")


def test_a_kill_between_the_two_files_leaves_a_loadable_checkpoint(tmp_path):
    """The state of a process killed after the new .safetensors and before the new .json."""
    save_checkpoint(tmp_path, "x", {"w": torch.ones(3)}, {"step": 1})
    old_json = (tmp_path / "x.json").read_bytes()
    save_checkpoint(tmp_path, "x", {"w": torch.full((3,), 2.0)}, {"step": 2})
    (tmp_path / "x.json").write_bytes(old_json)
    state, meta = load_checkpoint(tmp_path, "x")
    assert meta == {"step": 2} and torch.equal(state["w"], torch.full((3,), 2.0))

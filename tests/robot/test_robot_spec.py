"""The wire contracts of robot/spec.py: each encodes and decodes to the same value, and bad input is one sentence."""

import dataclasses
import json

import pytest

from steer.robot import messages as m
from steer.robot.spec import (DEFAULT_LATENT_NOISE_BOUND, SPEC_KEY, EpisodeStatus, PolicySpec, SafetyState,
                              WireError)

PPO = PolicySpec(kind="ppo", task="steer/Drive-v0", obs_names=("speed", "limit"), action_names=("steer", "accel"),
                 obs_dim=2, action_dim=2, chunk_len=1, noise_input=False, control_rate_hz=10.0,
                 action_low=(-1.0, -1.0), action_high=(1.0, 1.0), weights_sha256="ab" * 32, source_run="runs/carl",
                 bev_shape=(8, 64, 64), bev_channels=("road", "route"))
BC = PolicySpec(kind="bc_diffusion", task="steer/PlanarPush-v0", obs_names=("a.pos", "b.pos"), action_names=("a",),
                obs_dim=2, action_dim=1, chunk_len=4, noise_input=True, control_rate_hz=20.0, action_low=(-0.3,),
                action_high=(0.3,), normalization={"obs_min": [-1.0, -2.0], "obs_max": [1.0, 2.0]},
                latent_noise_bound=1.25)


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert getattr(err.value, "user_facing", False) and "\n" not in text and text.endswith(".")
    return text


@pytest.mark.parametrize("spec", [PPO, BC], ids=["ppo", "bc"])
def test_policy_spec_round_trips(spec):
    text = spec.to_json()
    assert json.loads(text)["format"] == "steer.policy/1"
    assert PolicySpec.from_json(text) == spec
    assert PolicySpec.from_metadata({SPEC_KEY: text, "other": "x"}) == spec


def test_a_spec_without_the_noise_bound_reads_the_default():
    d = BC.to_dict()
    del d["latent_noise_bound"], d["bev_shape"], d["bev_channels"]
    spec = PolicySpec.from_json(json.dumps(d))
    assert spec.latent_noise_bound == DEFAULT_LATENT_NOISE_BOUND == 1.5 and spec.bev_shape == ()


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "spec format is None"),
    (json.dumps({**BC.to_dict(), "format": "steer.policy/0"}), "expected 'steer.policy/1'"),
    (json.dumps({k: v for k, v in BC.to_dict().items() if k != "obs_dim"}), "field 'obs_dim'"),
    (json.dumps({**BC.to_dict(), "chunk_len": "four"}), "mistypes field"),
    (json.dumps({**BC.to_dict(), "obs_dim": 3}), "2 obs_names for obs_dim 3"),
    (json.dumps({**BC.to_dict(), "latent_noise_bound": 0.0}), "latent_noise_bound 0.0 is not positive"),
    (json.dumps({**PPO.to_dict(), "chunk_len": 4}), "chunk_len 4 is invalid for kind 'ppo'"),
])
def test_a_bad_spec_is_one_sentence(text, needle):
    with pytest.raises(WireError) as err:
        PolicySpec.from_json(text)
    assert needle in _one_sentence(err)


def test_missing_spec_metadata_is_one_sentence():
    with pytest.raises(WireError) as err:
        PolicySpec.from_metadata({"producer": "someone"})
    assert f"no '{SPEC_KEY}' metadata" in _one_sentence(err)


def test_safety_state_round_trips_through_cdr_bytes():
    state = SafetyState(mode="running", reason="running", ticks=120, clipped=3, watchdog_trips=1, non_finite=2,
                        watchdog_tripped=True, episode="4", command_subscribers=1, policy="/p/new.onnx",
                        policy_sha256="cd" * 32, promote_error="")
    message = m.deserialize(m.DiagnosticStatus, m.serialize(state.to_message("arm")))
    assert SafetyState.from_message(message) == state
    assert (message.name, message.hardware_id, message.message) == ("arm/safety", "arm", "running")
    assert message.level == m.DIAG_ERROR  # running on a stale observation
    assert {kv.key: kv.value for kv in message.values}["watchdog_tripped"] == "true"
    assert state.interventions == {"clipped": 3, "watchdog_trips": 1, "non_finite": 2}


@pytest.mark.parametrize("mode, stale, level", [("running", False, m.DIAG_OK), ("estopped", False, m.DIAG_ERROR),
                                                ("idle", False, m.DIAG_WARN), ("stopped", True, m.DIAG_WARN)])
def test_safety_level_follows_mode_and_watchdog(mode, stale, level):
    assert SafetyState(mode=mode, watchdog_tripped=stale).to_message("r").level == level


def test_a_bad_safety_state_is_one_sentence():
    with pytest.raises(WireError) as err:
        SafetyState.from_message(m.DiagnosticStatus(values=[m.KeyValue("episode", "1")]))
    assert "no 'mode'" in _one_sentence(err)
    with pytest.raises(WireError) as err:
        SafetyState.from_message(m.DiagnosticStatus(values=[m.KeyValue("mode", "running"),
                                                            m.KeyValue("clipped", "many")]))
    assert "clipped='many'" in _one_sentence(err)
    with pytest.raises(WireError) as err:
        SafetyState.from_message(m.DiagnosticStatus(values=[m.KeyValue("mode", "running"),
                                                            m.KeyValue("estop_latched", "yes")]))
    assert "true or false" in _one_sentence(err)
    # Missing optional fields keep their defaults (an older node, or a partial state).
    assert SafetyState.from_message(m.DiagnosticStatus(values=[m.KeyValue("mode", "idle")])) == SafetyState("idle")


def test_the_safety_state_carries_the_operator_fields():
    state = SafetyState("idle", armed=False, operator_refusals=3,
                        last_refusal="arm refused: not signed by a key this robot trusts.")
    message = m.deserialize(m.DiagnosticStatus, m.serialize(state.to_message("arm")))
    assert SafetyState.from_message(message) == state
    assert {kv.key: kv.value for kv in message.values}["operator_refusals"] == "3"


def test_a_field_added_to_a_message_travels_and_older_readers_ignore_it():
    @dataclasses.dataclass(frozen=True)
    class LaterStatus(EpisodeStatus):
        reward: float = 0.0

    later = LaterStatus("end", "2", reward=1.5)
    message = later.to_message("arm")
    assert LaterStatus.from_message(message) == later
    assert EpisodeStatus.from_message(message) == EpisodeStatus("end", "2")


def test_graph_hash_is_the_stored_graph_and_a_broken_file_is_one_sentence(tmp_path):
    import hashlib

    import onnx

    from robot_helpers import make_policy
    from steer.robot.spec import graph_sha256

    path = make_policy(tmp_path / "p.onnx")
    data = path.read_bytes()
    assert graph_sha256(data) == hashlib.sha256(onnx.load(str(path)).graph.SerializeToString()).hexdigest()
    # The metadata is not part of it: a spec can carry the hash of its own graph.
    model = onnx.load(str(path))
    model.metadata_props[0].value = "{}"
    assert graph_sha256(model.SerializeToString()) == graph_sha256(data)
    for broken in (data[: len(data) // 2], b"\xff" * 40, b""):
        with pytest.raises(WireError) as err:
            graph_sha256(broken)
        _one_sentence(err)


def test_episode_status_round_trips_and_a_bare_one_reads_defaults():
    end = EpisodeStatus("end", "3", seed=1003, steps=57, is_success=True)
    message = m.deserialize(m.DiagnosticStatus, m.serialize(end.to_message("arm")))
    assert EpisodeStatus.from_message(message) == end and message.message == "end"
    assert {kv.key: kv.value for kv in message.values}["is_success"] == "true"
    assert EpisodeStatus.from_message(m.DiagnosticStatus(values=[m.KeyValue("episode", "2")])) == EpisodeStatus(
        episode="2")
    with pytest.raises(WireError) as err:
        EpisodeStatus.from_message(m.DiagnosticStatus(values=[m.KeyValue("steps", "5.5")]))
    assert "steps='5.5'" in _one_sentence(err)


# -- adapting on a robot -------------------------------------------------------------------------

def test_latent_chunk_round_trips_exactly_through_cdr_bytes():
    import numpy as np

    from steer.robot.spec import LatentChunk

    noise = np.clip(np.random.default_rng(0).standard_normal(8), -1.5, 1.5).astype(np.float32)
    chunk = LatentChunk(session="s1", episode="7", chunk=3, chunk_len=4, action_dim=2,
                        noise=tuple(float(x) for x in noise), source="baseline", obs=(0.1, -2.5, 1e-7),
                        sent_ns=1_700_000_000_123_456_789)
    message = m.deserialize(m.DiagnosticStatus, m.serialize(chunk.to_message("arm")))
    back = LatentChunk.from_message(message)
    assert back == chunk
    assert np.array_equal(back.array(), noise.reshape(4, 2))  # bit-exact float32
    assert back.problems((4, 2), 1.5) == "" and back.problems((4, 2), 1.0) != ""
    assert LatentChunk.from_message(LatentChunk(obs=()).to_message("arm")).obs == ()


@pytest.mark.parametrize("noise, shape, needle", [((0.0,) * 8, (4, 3), "shape"), ((float("nan"),) + (0.0,) * 7,
                                                   (4, 2), "not finite"), ((1.6,) + (0.0,) * 7, (4, 2), "bound 1.5")])
def test_a_latent_that_cannot_run_says_why(noise, shape, needle):
    from steer.robot.spec import LatentChunk

    assert needle in LatentChunk(chunk_len=4, action_dim=2, noise=noise).problems(shape, 1.5)
    assert LatentChunk(chunk_len=4, action_dim=2, noise=(1.5, -1.5) * 4).problems((4, 2), 1.5) == ""


def test_a_mistyped_latent_is_one_sentence():
    from steer.robot.spec import LatentChunk

    for key, value, needle in (("noise", "1.0,abc", "comma-separated floats"), ("chunk", "x", "integer"),
                               ("source", "attacker", "source")):
        with pytest.raises(WireError) as err:
            LatentChunk.from_message(m.DiagnosticStatus(values=[m.KeyValue(key, value)]))
        assert needle in _one_sentence(err)


def test_adapt_status_and_control_round_trip_and_refuse_unknown_states():
    from steer.robot.spec import ADAPT_COMMANDS, AdaptControl, AdaptStatus

    status = AdaptStatus(session="s1", state="running", algo="na", episodes=12, env_steps=900, success=0.75,
                         baseline_success=0.21, threshold=0.189, rho=0.4, gate_choice="explore",
                         shield_interventions=3, late_latents=2, fallbacks=5, last_error="")
    message = m.deserialize(m.DiagnosticStatus, m.serialize(status.to_message("arm")))
    assert AdaptStatus.from_message(message) == status and message.level == m.DIAG_OK
    assert AdaptStatus(last_error="x").to_message("arm").level == m.DIAG_ERROR
    for command in ADAPT_COMMANDS:
        control = AdaptControl(command, session="s1", episode="4", stamp_ns=5)
        assert AdaptControl.from_message(m.deserialize(m.DiagnosticStatus, m.serialize(
            control.to_message("arm")))) == control
    with pytest.raises(WireError) as err:
        AdaptStatus.from_message(m.DiagnosticStatus(values=[m.KeyValue("state", "exploding")]))
    assert "exploding" in _one_sentence(err)
    with pytest.raises(WireError) as err:
        AdaptControl.from_message(m.DiagnosticStatus(values=[m.KeyValue("command", "arm")]))
    assert "'arm'" in _one_sentence(err)


def test_the_safety_state_carries_the_adaptation_session():
    state = SafetyState("running", steered=True, adapt_session="s1", latents_used=40, latents_late=2,
                        latents_fallback=3, latents_rejected=1)
    assert SafetyState.from_message(m.deserialize(m.DiagnosticStatus, m.serialize(state.to_message("arm")))) == state

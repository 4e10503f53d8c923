"""Steered mode of the policy node: the learner's latents drive the noise, only inside a signed session.

The node runs on the in-memory transport and its fake clock; the cross-process loop over DDS is in
tests/agent/test_adapt_wire.py.
"""

import numpy as np
import pytest

from robot_helpers import FakeClock, MemoryTransport, make_policy, operator_key, signed, trusting
from steer.robot import messages as m
from steer.robot.config import load_robot_config
from steer.robot.errors import PolicyRefused
from steer.robot.onnx_policy import OnnxPolicy
from steer.robot.policy_node import PolicyNode
from steer.robot.spec import STEERED_LEAD_IN_STEPS, LatentChunk, SafetyState

ROBOT = trusting(load_robot_config())
CMD = "/pusher_velocity_controller/commands"
GAIN = 0.05  # action = bias + GAIN * noise: a latent of 1.0 moves the command by 0.05 m/s


def _node(tmp_path, steered=True, noise_input=True):
    clock = FakeClock()
    transport = MemoryTransport(clock)
    policy = make_policy(tmp_path / "bc.onnx", kind="bc_diffusion", noise_input=noise_input, bias=[0.0, 0.0],
                         noise_gain=GAIN, bound=1.0)
    node = PolicyNode(ROBOT, OnnxPolicy(policy, robot=ROBOT), transport, clock=clock, steered=steered)
    return node, transport, clock


def _send(transport, topic, message):
    transport.publisher(topic, m.DiagnosticStatus).publish(message)


def _tick(node, transport, clock, episode=None):
    clock.advance(0.05)
    if episode is not None:
        from steer.robot.spec import EpisodeStatus

        _send(transport, "/episode", EpisodeStatus("start", episode).to_message("robot"))
    transport.publisher("/goal", m.Float64MultiArray).publish(m.Float64MultiArray(data=[0.2, 0.1]))
    transport.publisher("/joint_states", m.JointState).publish(m.JointState(
        name=["pusher_x", "pusher_y", "puck_x", "puck_y"], position=[0.0] * 4, velocity=[0.0] * 4))
    node.spin_once()
    return np.array(transport.sent[CMD][-1].data) if transport.sent.get(CMD) else None


def _arm(node, transport, clock, session="s1", command="adapt_start"):
    _send(transport, "/operator_command", signed("arm", node.policy_sha256, clock))
    if session is not None:
        _send(transport, "/operator_command", signed(command, node.policy_sha256, clock, args={"session": session}))


def _latent(session, episode, chunk, value):
    return LatentChunk(session=session, episode=episode, chunk=chunk, chunk_len=4, action_dim=2,
                       noise=(float(value),) * 8).to_message("learner")


def _executed(transport):
    return [LatentChunk.from_message(x) for x in transport.sent.get("/latent_executed", [])]


def test_latents_steer_the_commands_inside_a_signed_session_and_late_or_missing_ones_fall_back(tmp_path):
    node, transport, clock = _node(tmp_path)
    _arm(node, transport, clock)
    lead_in = [_tick(node, transport, clock, episode="0")]  # chunk 0, the lead-in: the node holds still
    assert node.safety_state().adapt_session == "s1"
    lead_in += [_tick(node, transport, clock) for _ in range(STEERED_LEAD_IN_STEPS - 1)]
    assert np.all(np.array(lead_in) == 0.0) and node.stats.queries == 0  # on time, no policy query
    # The learner's latent for chunk 1 (all +1.0), chosen from the episode's first observation, arrives before
    # the chunk starts: its four commands carry it.
    _send(transport, "/latent", _latent("s1", "0", 1, 1.0))
    steered = [_tick(node, transport, clock) for _ in range(4)]
    _send(transport, "/latent", _latent("s1", "0", 2, -1.0))
    back = [_tick(node, transport, clock) for _ in range(4)]
    assert np.allclose(steered[-1], [GAIN, GAIN], atol=1e-6) and np.allclose(back[-1], [-GAIN, -GAIN], atol=1e-6)
    # Chunk 3 gets no latent (the learner is slow): the node does not wait, it runs the baseline's noise.
    missing = _tick(node, transport, clock)
    assert missing is not None and np.all(np.abs(missing) <= GAIN * 1.5 + 1e-9)  # baseline noise is within ±1.5
    assert not np.allclose(missing, back[-1])
    # The latent for chunk 3 arrives during chunk 3: too late, counted, never run.
    _send(transport, "/latent", _latent("s1", "0", 3, 0.5))
    _tick(node, transport, clock)
    state = node.safety_state()
    assert (state.latents_used, state.latents_fallback, state.latents_late, state.latents_rejected) == (2, 1, 1, 0)
    executed = _executed(transport)
    assert [(e.chunk, e.source) for e in executed] == [(1, "learner"), (2, "learner"), (3, "baseline")]
    assert executed[0].noise == (1.0,) * 8 and len(executed[0].obs) == 10 and executed[0].session == "s1"
    assert SafetyState.from_message(node.safety_message()).latents_late == 1


def test_latents_outside_a_session_or_from_another_or_out_of_bounds_are_refused(tmp_path):
    node, transport, clock = _node(tmp_path)
    _arm(node, transport, clock, session=None)  # armed to move, but no adaptation session
    _tick(node, transport, clock, episode="0")
    _send(transport, "/latent", _latent("s1", "0", 1, 1.0))
    commands = [_tick(node, transport, clock) for _ in range(4)]
    assert node.safety_state().latents_rejected == 1 and node.safety_state().latents_used == 0
    assert not np.allclose(commands[-1], [GAIN, GAIN])  # baseline noise, not the refused +1.0
    assert node.safety_state().latents_fallback == 0  # no session: the baseline is simply what runs
    _send(transport, "/operator_command", signed("adapt_start", node.policy_sha256, clock, args={"session": "s1"}))
    _tick(node, transport, clock)
    for bad in (_latent("other", "0", 3, 0.5), _latent("s1", "0", 3, 1.6),  # another session; beyond the bound 1.5
                LatentChunk(session="s1", episode="0", chunk=3, chunk_len=2, action_dim=2,
                            noise=(0.1,) * 4).to_message("x"),
                m.DiagnosticStatus(values=[m.KeyValue("noise", "nan-ish")])):
        _send(transport, "/latent", bad)
    for _ in range(3):  # the rest of chunk 2, which started without a latent on the tick above
        _tick(node, transport, clock)
    state = node.safety_state()
    assert (state.latents_rejected, state.latents_used, state.latents_fallback) == (5, 0, 1)


@pytest.mark.parametrize("how", ["unsigned", "forged", "other_policy", "no_session"])
def test_an_unsigned_or_forged_adapt_start_arms_no_session(tmp_path, how):
    node, transport, clock = _node(tmp_path)
    _arm(node, transport, clock, session=None)
    if how == "unsigned":
        good = signed("adapt_start", node.policy_sha256, clock, args={"session": "s1"})
        values = [kv for kv in good.values if kv.key != "signature"]
        message = m.DiagnosticStatus(name=good.name, message=good.message, values=values)
    elif how == "forged":  # signed by a key the robot does not trust
        message = signed("adapt_start", node.policy_sha256, clock, key=operator_key(7), args={"session": "s1"})
    elif how == "other_policy":
        message = signed("adapt_start", "ab" * 32, clock, args={"session": "s1"})
    else:
        message = signed("adapt_start", node.policy_sha256, clock)
    _send(transport, "/operator_command", message)
    _tick(node, transport, clock, episode="0")
    _send(transport, "/latent", _latent("s1", "0", 1, 1.0))
    for _ in range(4):
        _tick(node, transport, clock)
    state = node.safety_state()
    assert state.adapt_session == "" and state.operator_refusals == 1 and "adapt_start refused" in state.last_refusal
    assert (state.latents_used, state.latents_rejected) == (0, 1)


def test_an_estop_ends_the_session_and_an_unsteered_node_refuses_to_start_one(tmp_path):
    node, transport, clock = _node(tmp_path)
    _arm(node, transport, clock)
    _tick(node, transport, clock, episode="0")
    transport.publisher("/estop", m.Bool, latched=True).publish(m.Bool(data=True))
    _tick(node, transport, clock)
    assert node.safety_state().adapt_session == "" and node.safety_state().mode == "estopped"
    _send(transport, "/latent", _latent("s1", "0", 1, 1.0))
    _tick(node, transport, clock)
    assert node.safety_state().latents_rejected == 1
    # adapt_start while e-stopped is refused too: a release and a new session are needed.
    _send(transport, "/operator_command", signed("adapt_start", node.policy_sha256, clock, args={"session": "s2"}))
    _tick(node, transport, clock)
    assert node.safety_state().adapt_session == "" and "e-stop" in node.safety_state().last_refusal

    (tmp_path / "plain").mkdir()
    plain, transport2, clock2 = _node(tmp_path / "plain", steered=False)
    _send(transport2, "/operator_command", signed("adapt_start", plain.policy_sha256, clock2,
                                                  args={"session": "s1"}))
    _tick(plain, transport2, clock2, episode="0")
    assert plain.safety_state().adapt_session == "" and "not in steered mode" in plain.safety_state().last_refusal


def test_steering_needs_a_policy_with_a_noise_input(tmp_path):
    with pytest.raises(PolicyRefused, match="no 'noise' input"):
        _node(tmp_path, noise_input=False)

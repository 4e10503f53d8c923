"""CaRL and Roach rewards: every factor and term against hand-computed values."""

import numpy as np
import pytest

from steer.driving.rewards import (
    CarlRewardConfig, RewardState, carl_factors, carl_reward, comfort_violations, roach_desired_speed, roach_reward,
)


def state(**kw):
    base = dict(progress_pct=1.0, outside_route_lanes=False, speed=5.0, speed_limit=10.0, ttc_violation=False,
                comfort_violations=0, lateral=0.0, lane_width=4.0, heading_error=0.0, steer_change=0.0,
                hazard_vehicle_gap=np.inf, hazard_light_gap=np.inf, terminated=False, collision_or_red_light=False)
    base.update(kw)
    return RewardState(**{k: np.atleast_1d(np.asarray(v)) for k, v in base.items()})


def test_carl_clean_progress_is_the_percent_gained():
    assert np.isclose(carl_reward(state(progress_pct=0.37))[0], 0.37)


def test_carl_outside_route_lanes_zeroes_progress():
    assert carl_reward(state(outside_route_lanes=True))[0] == 0.0


@pytest.mark.parametrize("speed,factor", [(10.0, 1.0), (11.115, 0.5), (12.23, 0.0), (15.0, 0.0), (3.0, 1.0)])
def test_carl_speeding_factor(speed, factor):
    # max(0, 1 - (v - limit) / 2.23), capped at 1 below the limit.
    assert np.isclose(carl_factors(state(speed=speed))["speeding"][0], factor)


def test_carl_ttc_halves():
    assert np.isclose(carl_reward(state(ttc_violation=True))[0], 0.5)


@pytest.mark.parametrize("n,factor", [(0, 1.0), (1, 1 - 0.5 / 6), (3, 0.75), (6, 0.5)])
def test_carl_comfort_factor(n, factor):
    assert np.isclose(carl_reward(state(comfort_violations=n))[0], factor)


@pytest.mark.parametrize("lat,factor", [(0.0, 1.0), (0.5, 0.75), (1.0, 0.5), (2.0, 0.0), (3.0, 0.0)])
def test_carl_lane_centring(lat, factor):
    # lane width 4 m: 1 - clip(d / 2, 0, 1)
    assert np.isclose(carl_reward(state(lateral=lat))[0], factor)


def test_carl_product_of_factors():
    # 2 % progress x speeding 0.5 x ttc 0.5 x comfort (1 - 0.5 * 2/6) x centring 0.75
    r = carl_reward(state(progress_pct=2.0, speed=11.115, ttc_violation=True, comfort_violations=2, lateral=0.5))
    assert np.isclose(r[0], 2.0 * 0.5 * 0.5 * (1 - 0.5 * 2 / 6) * 0.75)


def test_carl_terminal_penalty_only_for_collision_and_red_light():
    assert np.isclose(carl_reward(state(progress_pct=0.0, terminated=True, collision_or_red_light=True))[0], -1.0)
    # off-road, blocked, timeout...: episode ends without penalty
    assert carl_reward(state(progress_pct=0.0, terminated=True))[0] == 0.0
    assert np.isclose(carl_reward(state(progress_pct=0.0, terminated=True, collision_or_red_light=True),
                                  CarlRewardConfig(terminal_penalty=2.0))[0], -2.0)


def test_roach_terms():
    # v = 5, v_des = 6: r_speed = 1 - 1/6; lateral 1 -> -0.5; heading 0.2 -> -0.2; steer change 0.05 -> -0.1
    r = roach_reward(state(speed=5.0, lateral=1.0, heading_error=-0.2, steer_change=0.05))
    assert np.isclose(r[0], (1 - 1 / 6) - 0.5 - 0.2 - 0.1)
    r = roach_reward(state(speed=6.0, steer_change=0.005))
    assert np.isclose(r[0], 1.0)


def test_roach_desired_speed_near_hazards():
    assert np.isclose(roach_desired_speed(state(hazard_vehicle_gap=10.5))[0], 6.0 * 2.5 / 5)
    assert roach_desired_speed(state(hazard_vehicle_gap=7.0))[0] == 0.0
    assert np.isclose(roach_desired_speed(state(hazard_light_gap=8.0))[0], 6.0 * 3 / 5)
    assert np.isclose(roach_desired_speed(state(hazard_light_gap=8.0, hazard_vehicle_gap=9.0))[0], 6.0 / 5)


def test_roach_terminal():
    assert np.isclose(roach_reward(state(speed=6.0, terminated=True))[0], 1.0 - 1.0)
    # collision at 4 m/s: -1 - 4 on top of r_speed = 1 - 2/6
    assert np.isclose(roach_reward(state(speed=4.0, terminated=True, collision_or_red_light=True))[0],
                      (1 - 2 / 6) - 5.0)


def test_comfort_violation_count():
    z = np.zeros(1)
    assert comfort_violations(z, z, z, z, z, z)[0] == 0
    assert comfort_violations(z + 2.5, z, z, z, z, z)[0] == 1
    assert comfort_violations(z - 4.1, z, z, z, z, z)[0] == 1
    assert comfort_violations(z - 4.0, z + 5.0, z + 1.0, z + 2.0, z + 4.2, z + 8.4)[0] == 5
    assert comfort_violations(z + 3, z - 5.0, z - 1.0, z - 2.0, z - 4.2, z + 8.4)[0] == 6


def test_carl_lost_route_penalty_charges_the_route_left_at_any_termination():
    cfg = CarlRewardConfig(lost_route_penalty=True)
    # A red light with 60 % of the route left: progress - 1 - 60.
    assert np.isclose(carl_reward(state(progress_pct=0.5, terminated=True, collision_or_red_light=True,
                                        route_left_pct=60.0), cfg)[0], 0.5 - 1.0 - 60.0)
    # A timeout costs the route left too, but not CaRL's -1.
    assert np.isclose(carl_reward(state(progress_pct=0.0, terminated=True, route_left_pct=25.0), cfg)[0], -25.0)
    # Running on, or off by default: no charge.
    assert np.isclose(carl_reward(state(progress_pct=0.5, route_left_pct=60.0), cfg)[0], 0.5)
    assert np.isclose(carl_reward(state(progress_pct=0.0, terminated=True, route_left_pct=25.0))[0], 0.0)


def test_carl_light_factor_reduces_progress_toward_a_red_line_too_fast():
    cfg = CarlRewardConfig(light_brake=3.0)
    # 12 m before the line: sqrt(2 * 3 * 12) = 8.49 m/s still stops; 1 m/s faster costs 1 / 2.23
    slow = carl_reward(state(speed=8.0, hazard_light_gap=12.0), cfg)[0]
    fast = carl_reward(state(speed=np.sqrt(72.0) + 1.0, hazard_light_gap=12.0), cfg)[0]
    assert np.isclose(slow, 1.0) and np.isclose(fast, 1.0 - 1.0 / 2.23)
    # at the line: no progress at the tolerance's speed; green (no gap) and the factor off change nothing
    assert carl_reward(state(speed=2.23, hazard_light_gap=0.0), cfg)[0] == 0.0
    assert np.isclose(carl_reward(state(speed=9.49), cfg)[0], 1.0)
    assert np.isclose(carl_reward(state(speed=9.49, hazard_light_gap=12.0))[0], 1.0)

"""The conservative exploration gate: bounds, ρ, decisions, and the guarantee against a harmful explorer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from steer.agent.conservative import (ConservativeConfig, ConservativeGate, EpisodePlan, GatedEnvs,
                                      clopper_pearson_bounds, epsmix_rho, hoeffding_bounds, window_below_prob,
                                      window_rho)


# ------------------------------------------------------------------ bounds
@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(0.0, 1.0), delta=st.floats(0.001, 0.3))
def test_clopper_pearson_matches_scipy(n, frac, delta):
    k = int(round(frac * n))
    lower, upper = clopper_pearson_bounds(k, n, delta)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=1.0 - 2.0 * delta, method="exact")
    assert lower == pytest.approx(ref.low, abs=1e-9)
    assert upper == pytest.approx(ref.high, abs=1e-9)


def test_clopper_pearson_known_values():
    # 0 of 10 at δ = 0.05: the upper bound solves (1 − p)^10 = 0.05.
    assert clopper_pearson_bounds(0, 10, 0.05) == (0.0, pytest.approx(1 - 0.05 ** 0.1, abs=1e-12))
    # 10 of 10: the lower bound solves p^10 = 0.05.
    assert clopper_pearson_bounds(10, 10, 0.05) == (pytest.approx(0.05 ** 0.1, abs=1e-12), 1.0)
    assert clopper_pearson_bounds(0, 0, 0.05) == (0.0, 1.0)
    with pytest.raises(ValueError):
        clopper_pearson_bounds(3, 2, 0.05)


def test_hoeffding_hand_computed():
    v = np.array([0.0, 1.0] * 25)  # mean 0.5, n = 50
    lo, hi = hoeffding_bounds(v, 0.1, 0.0, 1.0)
    half = math.sqrt(math.log(10.0) / 100.0)  # 0.151743...
    assert half == pytest.approx(0.1517427, abs=1e-7)
    assert (lo, hi) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    # Range 10 scales the width by 10; clipped to the range.
    assert hoeffding_bounds(v * 10 - 5, 0.1, -5.0, 5.0)[0] == pytest.approx(-10 * half)
    assert hoeffding_bounds(np.zeros(2), 0.1, 0.0, 1.0)[0] == 0.0
    assert hoeffding_bounds(np.zeros(0), 0.1, 0.0, 1.0) == (0.0, 1.0)


# ------------------------------------------------------------------ ρ
@pytest.mark.parametrize("alpha,lb,ub,le,expected", [
    (0.2, 0.4, 0.6, 0.2, 0.2),    # 0.08 / 0.4
    (0.2, 0.4, 0.6, 0.5, 0.8),    # 0.08 / 0.1
    (0.2, 0.4, 0.6, 0.6, 1.0),    # explorer provably as good as the baseline
    (0.2, 0.4, 0.6, 0.9, 1.0),
    (0.5, 0.4, 0.5, 0.0, 0.4),    # 0.2 / 0.5
    (0.0, 0.4, 0.6, 0.1, 0.0),    # no slack: never explore unless provably better
    (0.1, 0.0, 0.3, 0.0, 0.0),    # a baseline that may be worthless leaves no slack either
])
def test_epsmix_rho_hand_computed(alpha, lb, ub, le, expected):
    assert epsmix_rho(alpha, lb, ub, le) == pytest.approx(expected, abs=1e-12)


def test_window_below_prob_is_the_binomial_tail():
    # 20 episodes under 0.64 means at most 12 successes; at exactly 0.65·20 = 13 the window is not below.
    assert window_below_prob(0.8, 0.64, 20) == pytest.approx(stats.binom.cdf(12, 20, 0.8), abs=1e-12)
    assert window_below_prob(0.8, 0.65, 20) == pytest.approx(stats.binom.cdf(12, 20, 0.8), abs=1e-12)
    assert window_below_prob(0.8, 0.66, 20) == pytest.approx(stats.binom.cdf(13, 20, 0.8), abs=1e-12)
    assert window_below_prob(0.3, 0.0, 20) == 0.0


@pytest.mark.parametrize("alpha,delta,window,lb,le", [
    (0.2, 0.05, 20, 0.8, 0.0), (0.2, 0.05, 20, 0.7, 0.3), (0.1, 0.01, 50, 0.6, 0.2), (0.3, 0.1, 10, 0.9, 0.5),
])
def test_window_rho_holds_the_window_tail_to_delta_above_the_baseline(alpha, delta, window, lb, le):
    thr = (1 - alpha) * lb
    rho = window_rho(alpha, delta, window, lb, le)
    assert 0.0 < rho < 1.0
    excess = lambda r: window_below_prob(r * le + (1 - r) * lb, thr, window) - window_below_prob(lb, thr, window)
    # At the cap the mixture's windows fall below δ more often than the baseline's, and no more; beyond it, more.
    assert excess(rho) == pytest.approx(delta, abs=1e-6)
    assert excess(min(1.0, rho + 0.02)) > delta
    # The clause is stricter than EpsMix's expectation here (U_b = L_b: the most EpsMix could allow).
    assert rho < epsmix_rho(alpha, lb, lb, le)
    # A better explorer may run more; one as good as the baseline runs freely.
    assert window_rho(alpha, delta, window, lb, (le + lb) / 2) > rho
    assert window_rho(alpha, delta, window, lb, lb) == 1.0


def test_guarantee_window_is_validated():
    with pytest.raises(ValueError, match="guarantee_window"):
        ConservativeConfig(variant="epsmix", guarantee_window=-1)
    with pytest.raises(ValueError, match="0/1 episode values"):
        ConservativeConfig(variant="epsmix", guarantee_window=20, bound="hoeffding", value_max=10.0)
    with pytest.raises(ValueError, match="budget"):
        ConservativeConfig(variant="budget", guarantee_window=20)


def test_gate_rho_hand_computed_hoeffding():
    # δ = 0.3 → δ/3 = 0.1 per bound; 50 baseline episodes of mean 0.5: L_b = 0.5 − h, U_b = 0.5 + h.
    gate = ConservativeGate(ConservativeConfig(variant="epsmix", alpha=0.2, delta=0.3, bound="hoeffding"))
    gate.baseline_values = [0.0, 1.0] * 25
    h = 0.15174271293851463
    # No explorer episodes yet: L_e = 0, ρ = 0.2·0.348257 / 0.651743 = 0.106869.
    assert gate.rho() == pytest.approx(0.2 * (0.5 - h) / (0.5 + h), abs=1e-9)
    assert gate.rho() == pytest.approx(0.106869, abs=1e-6)
    # 50 explorer episodes of mean 0.9: L_e = 0.9 − h = 0.748 ≥ U_b = 0.652 → ρ = 1.
    gate.explorer_values = [1.0] * 45 + [0.0] * 5
    gate.cfg = ConservativeConfig(variant="epsmix", alpha=0.2, delta=0.3, bound="hoeffding", explorer_window=50)
    assert gate.explorer_lower() == pytest.approx(0.9 - h, abs=1e-9)
    assert gate.rho() == 1.0
    assert gate.threshold() == pytest.approx(0.8 * (0.5 - h), abs=1e-9)


def test_gate_rho_clopper_pearson_uses_a_third_of_delta():
    gate = ConservativeGate(ConservativeConfig(variant="epsmix", alpha=0.3, delta=0.06))
    gate.baseline_values = [1.0] * 40 + [0.0] * 60
    gate.explorer_values = [1.0] * 3 + [0.0] * 7
    lb = stats.beta.ppf(0.02, 40, 61)
    ub = stats.beta.ppf(0.98, 41, 60)
    le = stats.beta.ppf(0.02, 3, 8)
    assert gate.rho() == pytest.approx(0.3 * lb / (ub - le), abs=1e-7)
    assert 0.0 < gate.rho() < 0.3


def test_stepmix_explorer_bound_from_mixed_episodes():
    gate = ConservativeGate(ConservativeConfig(variant="stepmix", alpha=0.2, delta=0.3, bound="hoeffding",
                                               explorer_window=50))
    gate.baseline_values = [0.0, 1.0] * 25
    gate.mix_values = [(1.0, 0.5)] * 40 + [(0.0, 0.5)] * 10  # mixed at share 0.5, mean 0.8
    h = 0.15174271293851463
    # Linear model: L_e = (L_mix − 0.5·U_b) / 0.5 = (0.8 − h − 0.5·(0.5 + h)) / 0.5.
    assert gate.explorer_lower() == pytest.approx((0.8 - h - 0.5 * (0.5 + h)) / 0.5, abs=1e-9)


# ------------------------------------------------------------------ decisions
def _gate(variant="epsmix", **kw):
    return ConservativeGate(ConservativeConfig(variant=variant, baseline_refresh_every=0, **kw))


def test_no_explorer_before_enough_baseline_episodes():
    gate = _gate(min_baseline_episodes=10)
    gate.explorer_values = [1.0] * 30  # even a perfect explorer waits
    for _ in range(9):
        gate.baseline_values.append(1.0)
        assert gate.begin_episode().kind == "baseline"
    gate.baseline_values.append(0.0)
    assert gate.rho() > 0.0


@pytest.mark.parametrize("variant", ["epsmix", "stepmix", "budget"])
def test_gate_never_picks_the_explorer_when_its_bound_forbids_it(variant):
    # α = 0 and an explorer that is not provably better: ρ = 0, so no chunk may run the explorer.
    gate = _gate(variant, alpha=0.0)
    gate.baseline_values = [1.0, 0.0] * 100
    gate.explorer_values = [1.0, 0.0, 0.0] * 10
    gate.mix_values = [(0.0, 0.5)] * 10
    assert gate.rho() == 0.0
    for k in range(2000):
        plan = gate.begin_episode()
        assert plan.kind == "baseline" and plan.rho == 0.0
        assert not any(gate.chunk_uses_explorer(plan) for _ in range(5))
        gate.end_episode(plan, float(k % 2))  # the baseline keeps its value 0.5


@settings(max_examples=60, deadline=None)
@given(b_succ=st.integers(0, 60), b_n=st.integers(10, 60), e_succ=st.integers(0, 30), e_n=st.integers(0, 30),
       alpha=st.floats(0.0, 0.5), seed=st.integers(0, 1000))
def test_epsmix_explores_at_rate_rho_and_budget_only_with_margin(b_succ, b_n, e_succ, e_n, alpha, seed):
    b_succ, e_succ = min(b_succ, b_n), min(e_succ, e_n)
    eps = _gate("epsmix", alpha=alpha, seed=seed)
    eps.baseline_values = [1.0] * b_succ + [0.0] * (b_n - b_succ)
    eps.explorer_values = [1.0] * e_succ + [0.0] * (e_n - e_succ)
    rho = eps.rho()
    picks = [eps.begin_episode().kind == "explorer" for _ in range(400)]
    if rho == 0.0:
        assert not any(picks)
    elif rho == 1.0:
        assert all(picks)
    else:  # binomial(400, ρ): 5 standard deviations
        # 5 sigma of the binomial, plus 3 draws of slack: at tiny rho a single hit in 400 is not an error.
        assert abs(np.mean(picks) - rho) <= 5 * math.sqrt(rho * (1 - rho) / 400) + 3 / 400
    budget = _gate("budget", alpha=alpha, seed=seed)
    budget.baseline_values = list(eps.baseline_values)
    budget.explorer_values = list(eps.explorer_values)
    margin = budget.budget_margin()
    assert (budget.begin_episode().kind == "explorer") == (margin >= 0.0)


def test_budget_margin_hand_computed():
    gate = _gate("budget", alpha=0.2, delta=0.3, bound="hoeffding")
    gate.baseline_values = [0.0, 1.0] * 25
    h = 0.15174271293851463
    lb, ub = 0.5 - h, 0.5 + h
    # 50 baseline episodes at L_b, the next at L_e = 0 (no explorer episodes), against 0.8·U_b each.
    assert gate.budget_margin() == pytest.approx(50 * lb + 0.0 - 0.8 * 51 * ub, abs=1e-9)
    assert gate.begin_episode().kind == "baseline"  # 17.41 − 26.59 < 0
    # A baseline plan in flight counts at L_b; two explorer episodes that all failed keep L_e at 0.
    gate.explorer_values = [0.0, 0.0]
    assert gate.budget_margin() == pytest.approx(51 * lb + 0.0 - 0.8 * 54 * ub, abs=1e-9)


def test_refresh_runs_the_baseline_even_at_rho_one():
    gate = ConservativeGate(ConservativeConfig(variant="epsmix", baseline_refresh_every=5))
    gate.baseline_values = [0.0] * 20
    gate.explorer_values = [1.0] * 30
    assert gate.rho() == 1.0
    kinds = [gate.begin_episode().kind for _ in range(20)]
    assert kinds.count("baseline") == 4 and kinds[4] == kinds[9] == "baseline"


def test_clopper_pearson_rejects_non_binary_values():
    gate = _gate()
    with pytest.raises(ValueError, match="0/1"):
        gate.end_episode(EpisodePlan(0.0, "baseline"), 0.5)
    with pytest.raises(ValueError, match="hoeffding"):
        ConservativeConfig(value_min=-100.0, value_max=0.0)
    with pytest.raises(ValueError, match="variant"):
        ConservativeConfig(variant="sometimes")


def test_gate_state_round_trip():
    a = _gate(seed=3)
    for v in [1.0, 0.0, 1.0] * 10:
        a.end_episode(a.begin_episode(), v)
    b = _gate(seed=99)
    b.load_state(a.state())
    assert b.baseline_bounds() == a.baseline_bounds() and b.rho() == a.rho()
    assert [b.begin_episode().kind for _ in range(50)] == [a.begin_episode().kind for _ in range(50)]


# ------------------------------------------------------------------ the guarantee
def _bernoulli_run(cfg, p_base, p_explorer, episodes, seed):
    """Per-episode exact values of the policy each episode ran, with Bernoulli outcomes."""
    rng = np.random.default_rng(seed)
    envs = GatedEnvs(cfg, num_envs=1)
    exact = []
    for k in range(episodes):
        plan = envs.plans[0]
        # Exact value of the episode's (randomized) policy: the explorer with probability explore_prob.
        q = plan.explore_prob
        exact.append(q * p_explorer + (1 - q) * p_base)
        use = envs.explorer_mask()[0]
        value = float(rng.random() < (p_explorer if use else p_base))
        envs.on_episode_end(0, value, k, warmup=False)
    return np.asarray(exact), envs


@pytest.mark.parametrize("variant", ["epsmix", "budget"])
def test_harmful_explorer_is_held_to_the_guarantee(variant):
    alpha, delta, p_base, p_explorer = 0.2, 0.05, 0.6, 0.25
    threshold = (1 - alpha) * p_base  # 0.48: an explorer-only episode (0.25) is far below it
    cfg = ConservativeConfig(variant=variant, alpha=alpha, delta=delta)
    violations, total, explored = 0, 0, 0
    for seed in range(12):
        exact, envs = _bernoulli_run(ConservativeConfig(**{**vars(cfg), "seed": seed}), p_base, p_explorer, 300,
                                     seed)
        if variant == "budget":
            # The budget variant keeps the running mean, not each episode, above the threshold.
            exact = np.cumsum(exact) / np.arange(1, len(exact) + 1)
        violations += int((exact < threshold - 1e-12).sum())
        total += len(exact)
        explored += sum(r.kind == "explorer" for r in envs.records)
    # The gate still explores (it is not just the baseline) ...
    assert explored >= (0.03 if variant == "epsmix" else 0.0) * total
    # ... yet episodes below (1 − α)·V_b stay within δ.
    assert violations / total <= delta, (violations, total)
    # Ungated, every episode of this explorer would violate the constraint.
    exact, _ = _bernoulli_run(ConservativeConfig(variant="monitor"), p_base, p_explorer, 100, 0)
    assert (exact[10:] < threshold).all()


def _windows_below(values, threshold, window):
    values = np.asarray(values, dtype=float)
    n = len(values) // window
    return float((values[:n * window].reshape(n, window).mean(axis=1) < threshold).mean())


def test_guarantee_window_keeps_windows_where_the_expectation_alone_does_not():
    """A worthless explorer under EpsMix: in expectation both gates hold, but only the window clause keeps
    20-episode windows near the baseline's own rate of falling below (1 − α)·V_b."""
    alpha, delta, p_base, window = 0.2, 0.05, 0.8, 20
    threshold = (1 - alpha) * p_base
    baseline_rate = window_below_prob(p_base, threshold, window)  # 0.032
    frac, share = {}, {}
    for w in (0, window):
        values, explored = [], 0
        for seed in range(4):
            cfg = ConservativeConfig(variant="epsmix", alpha=alpha, delta=delta, guarantee_window=w, seed=seed)
            _, envs = _bernoulli_run(cfg, p_base, 0.0, 1500, seed)
            values += [r.value for r in envs.records]
            explored += sum(r.kind == "explorer" for r in envs.records)
        frac[w], share[w] = _windows_below(values, threshold, window), explored / len(values)
    n_windows = 4 * 1500 // window
    noise = 3 * math.sqrt((baseline_rate + delta) * (1 - baseline_rate - delta) / n_windows)
    assert frac[window] <= baseline_rate + delta + noise, frac
    assert frac[0] >= baseline_rate + delta + 0.05, frac  # expectation only: far more windows below
    assert 0.01 <= share[window] < share[0], share  # it still explores, less


@pytest.mark.parametrize("guarantee_window", [0, 20])
def test_a_good_explorer_takes_over(guarantee_window):
    cfg = ConservativeConfig(variant="epsmix", alpha=0.2, baseline_refresh_every=20, guarantee_window=guarantee_window)
    exact, envs = _bernoulli_run(cfg, 0.4, 0.95, 600, 1)
    late = envs.records[-100:]
    # Refresh episodes keep 1 in 20 with the baseline; the rest explore once the explorer proves itself.
    assert sum(r.kind == "explorer" for r in late) >= 90
    assert np.mean([r.value for r in late]) >= 0.8


def test_window_metrics_are_logged():
    from steer.agent.runlog import MemoryLog

    log = MemoryLog()
    envs = GatedEnvs(ConservativeConfig(variant="epsmix", metrics_window=10), num_envs=2)
    for k in range(40):
        i = k % 2
        envs.explorer_mask()
        envs.on_chunk(i, {"chunk_steps": 4, "safety/interventions": 2 * (k // 2 + 1), "safety/violations": 0})
        envs.on_episode_end(i, float(k % 3 == 0), 4 * k, warmup=False, run=log)
    rows = log.series("safety/below_threshold_frac")
    assert len(rows) == 4
    first = log.records[0]
    # 40 chunks of 4 steps, 2 interventions each → 500 per 1,000 steps.
    assert first["safety/shield_interventions_per_1k"] == pytest.approx(500.0)
    assert first["safety/constraint_violations"] == 0.0
    assert 0.0 <= first["safety/rho"] <= 1.0
    assert first["safety/window_value"] == pytest.approx(np.mean([float(k % 3 == 0) for k in range(10)]))

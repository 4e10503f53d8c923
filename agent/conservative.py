"""Conservative exploration: adapt a policy without doing much worse than the baseline.

Li et al. 2023 (StepMix / EpsMix) keep every episode's value at least
(1 − α)·V(π_b) with probability at least 1 − δ, given a safe baseline π_b. Here the
baseline is the BC policy (w ~ N(0, I) clipped to ±b) and the explorer is the DSRL
latent actor. The gate works from episode outcomes only:

* the baseline's value V_b gets a lower bound L_b and an upper bound U_b from baseline
  episodes (every episode that ran the baseline, plus periodic refresh episodes);
* the explorer's value V_e gets a lower bound L_e from its recent episodes;
* bounds are Clopper–Pearson for 0/1 outcomes (success) or Hoeffding for returns in a
  known range, each at confidence 1 − δ/3, so all three hold together with 1 − δ.

EpsMix runs a whole episode with the explorer with probability ρ. The episode's
policy is the mixture with value ρ·V_e + (1 − ρ)·V_b, which is ≥ (1 − α)·V_b iff
ρ·(V_b − V_e) ≤ α·V_b; with the bounds this is guaranteed by

    ρ = min(1, α·L_b / (U_b − L_e))        (ρ = 1 when L_e ≥ U_b).

StepMix draws explorer or baseline per chunk with the same ρ. Its value is linear in
ρ only to first order, and no episode runs the explorer alone, so the explorer's
bound comes from the mixed episodes through that linear model,
L_e = (L_mix − (1 − ρ̄)·U_b) / ρ̄: conservative, but slow to grow when ρ̄ is small.
The cumulative-budget variant runs whole explorer episodes while the accumulated
margin over (1 − α)·V_b, counted pessimistically (every episode at the lower bound of
the policy it ran, against (1 − α)·U_b; the next one at L_e), stays ≥ 0.

Every window, not only the expectation (``guarantee_window`` W > 0, 0/1 values). A mixture whose mean
sits just above (1 − α)·V_b keeps the expectation, yet a window of W episodes of it falls below the
threshold far more often than a window of the baseline would: with V_b = 0.8, α = 0.2 and W = 20, the
baseline's windows fall below 3 % of the time, the EpsMix mixture's with a worthless explorer 34 %.
The window clause caps ρ further, so that a window of the mixture falls under (1 − α)·L_b at most δ more
often than a window of the baseline: with the window's success count binomial,

    P(Bin(W, m) < (1 − α)·L_b·W) ≤ P(Bin(W, L_b) < (1 − α)·L_b·W) + δ,   m = ρ·L_e + (1 − ρ)·L_b,

which gives m ≥ m* in closed form (a beta quantile) and ρ ≤ (L_b − m*) / (L_b − L_e). Both sides are
taken at the baseline's lower bound, where the difference of the two tails is largest for a baseline
above the threshold; it holds given the bounds, which hold with 1 − δ themselves.

The explorer's bound uses a window of its most recent episodes because the explorer
keeps learning; that is an estimate of a moving target, not a bound on the next
episode's policy, which is why the bench measures the realized violations.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Variant = Literal["off", "monitor", "epsmix", "stepmix", "budget"]


@dataclass(frozen=True)
class ConservativeConfig:
    """Conservative exploration gate (Li et al. 2023). ``off`` leaves training exactly as without it."""

    variant: Variant = "off"
    """``off``: no gate; ``monitor``: never gates, only logs the safety metrics; ``epsmix``: explorer for a
    whole episode with probability ρ; ``stepmix``: explorer per chunk with probability ρ; ``budget``: explorer
    episodes while the cumulative margin over (1 − α)·V_b stays positive."""
    alpha: float = field(default=0.2, metadata={"range": "[0, 1]"})
    """α: each episode's value must stay ≥ (1 − α)·V(baseline)."""
    delta: float = field(default=0.05, metadata={"range": "(0, 1)"})
    """δ: the guarantee holds with probability ≥ 1 − δ (split over the three confidence bounds)."""
    bound: Literal["clopper_pearson", "hoeffding"] = "clopper_pearson"
    """Confidence bounds: ``clopper_pearson`` for 0/1 episode values (success), ``hoeffding`` for returns in
    [value_min, value_max]."""
    value_min: float = field(default=0.0, metadata={"range": "(-inf, inf)"})
    """Lowest possible episode value (the task return; PlanarPush: 0, failure)."""
    value_max: float = field(default=1.0, metadata={"range": "(-inf, inf)"})
    """Highest possible episode value (PlanarPush: 1, success)."""
    min_baseline_episodes: int = 10
    """Episodes run with the baseline before the explorer may run at all."""
    baseline_refresh_every: int = 20
    """Every n-th episode runs the baseline, so its estimate stays fresh while ρ is 1 (0: never)."""
    baseline_window: int = 0
    """Baseline episodes used for its bounds, most recent first (0: all of them)."""
    explorer_window: int = field(default=30, metadata={"range": "[1, inf)"})
    """Explorer (or, for StepMix, mixed) episodes used for its lower bound, most recent first."""
    metrics_window: int = field(default=50, metadata={"range": "[1, inf)"})
    """Episodes per logged window of safety metrics."""
    guarantee_window: int = field(default=0, metadata={"range": "[0, inf)"})
    """Also keep windows of this many episodes (0/1 values; EpsMix and StepMix): ρ is capped so that a window of
    the mixture falls under (1 − α)·L_b at most δ more often than one of the baseline. 0: the guarantee is on
    the expected value only (Li et al.), and the mixture may sit just above the threshold."""
    explorer_deterministic: bool = True
    """Gated variants only: explorer chunks run the learner's deterministic action (its mean), so the
    episodes the gate bets on are the learner's best guess; exploration then comes from the baseline's own
    diversity (for DSRL, the BC baseline's noise is exactly the warm-up's exploration), which the off-policy
    learner trains on as well. ``False``: explorer chunks sample the learner's stochastic policy."""
    seed: int = 0
    """Seed of the gate's coin flips."""

    def __post_init__(self) -> None:
        if self.variant not in ("off", "monitor", "epsmix", "stepmix", "budget"):
            raise ValueError(f"unknown conservative variant {self.variant!r}; choose off, monitor, epsmix, stepmix "
                             "or budget.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}.")
        if not self.value_min < self.value_max:
            raise ValueError(f"value_min ({self.value_min}) must be below value_max ({self.value_max}).")
        if self.bound == "clopper_pearson" and (self.value_min, self.value_max) != (0.0, 1.0):
            raise ValueError("Clopper–Pearson bounds need 0/1 episode values; use bound='hoeffding' for returns.")
        if self.bound not in ("clopper_pearson", "hoeffding"):
            raise ValueError(f"unknown bound {self.bound!r}; choose clopper_pearson or hoeffding.")
        if self.guarantee_window < 0:
            raise ValueError(f"guarantee_window must be at least 0, got {self.guarantee_window}.")
        if self.guarantee_window and self.bound != "clopper_pearson":
            raise ValueError("guarantee_window needs 0/1 episode values (bound='clopper_pearson'): a window of "
                             "returns has no binomial tail.")
        if self.guarantee_window and self.variant == "budget":
            raise ValueError("guarantee_window applies to epsmix and stepmix; the budget variant keeps a running "
                             "margin instead.")

    @property
    def enabled(self) -> bool:
        """True when the gate or its metrics run at all."""
        return self.variant != "off"


# --------------------------------------------------------------------- bounds
def hoeffding_bounds(values: np.ndarray, delta: float, lo: float, hi: float) -> tuple[float, float]:
    """One-sided Hoeffding bounds (each at confidence 1 − δ) on the mean of i.i.d. values in [lo, hi]."""
    n = len(values)
    if n == 0:
        return lo, hi
    half = (hi - lo) * math.sqrt(math.log(1.0 / delta) / (2.0 * n))
    m = float(np.mean(values))
    return max(lo, m - half), min(hi, m + half)


def clopper_pearson_bounds(successes: int, n: int, delta: float) -> tuple[float, float]:
    """One-sided exact (Clopper–Pearson) bounds on a success probability, each at confidence 1 − δ.

    The lower bound p solves P(X ≥ k | p) = δ, the upper one P(X ≤ k | p) = δ.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}.")
    if n == 0:
        return 0.0, 1.0
    return _clopper_pearson(int(successes), int(n), float(delta))


@functools.lru_cache(maxsize=4096)
def _clopper_pearson(k: int, n: int, delta: float) -> tuple[float, float]:
    # The exact bounds are beta quantiles: P(X ≥ k | p) = I_p(k, n − k + 1) and P(X ≤ k | p) = 1 − I_p(k + 1, n − k).
    from scipy.stats import beta  # here: scipy.stats takes a while to import and most commands never need it

    lower = 0.0 if k == 0 else float(beta.ppf(delta, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1.0 - delta, k + 1, n - k))
    return lower, upper


# --------------------------------------------------------------------- mixing
def epsmix_rho(alpha: float, baseline_lower: float, baseline_upper: float, explorer_lower: float) -> float:
    """Largest ρ with ρ·L_e + (1 − ρ)·V_b ≥ (1 − α)·V_b for every V_b in [L_b, U_b].

    The mixture keeps the constraint iff ρ·(V_b − V_e) ≤ α·V_b; the worst case over the bounds is
    ρ·(U_b − L_e) ≤ α·L_b, so ρ = min(1, α·L_b / (U_b − L_e)), and 1 when the explorer provably
    does at least as well as the baseline.
    """
    gap = baseline_upper - explorer_lower
    if gap <= 0.0:
        return 1.0
    return float(min(1.0, max(0.0, alpha * baseline_lower) / gap))


def window_below_prob(mean: float, threshold: float, window: int) -> float:
    """Probability that ``window`` 0/1 episodes of a policy with success probability ``mean`` average under
    ``threshold`` (the window's success count is Bin(window, mean))."""
    from scipy.stats import binom  # here: scipy.stats takes a while to import and most commands never need it

    k = _most_successes_below(threshold, window)
    return 0.0 if k < 0 else float(binom.cdf(k, window, mean))


def _most_successes_below(threshold: float, window: int) -> int:
    """A window is below ``threshold`` with fewer than threshold·W successes, i.e. at most this many (−1: never)."""
    return math.ceil(threshold * window - 1e-12) - 1


def window_rho(alpha: float, delta: float, window: int, baseline_lower: float, explorer_lower: float) -> float:
    """Largest ρ whose mixture's W-episode windows fall under (1 − α)·L_b at most δ more often than the
    baseline's, the mixture's mean taken at ρ·L_e + (1 − ρ)·L_b (see the module's docstring)."""
    from scipy.stats import beta

    lb, le = baseline_lower, explorer_lower
    threshold = (1.0 - alpha) * lb
    k = _most_successes_below(threshold, window)
    allowed = window_below_prob(lb, threshold, window) + delta
    if le >= lb or k < 0 or allowed >= 1.0:
        return 1.0  # no worse than the baseline, no window can fall below, or any window may
    # P(Bin(W, m) ≤ k) = P(Beta(W − k, k + 1) ≤ 1 − m): the tail equals `allowed` at m* = 1 − that quantile,
    # and an explorer with L_e ≥ m* may run alone (the ratio below is then ≥ 1).
    m_star = 1.0 - float(beta.ppf(allowed, window - k, k + 1))
    return float(min(1.0, max(0.0, (lb - m_star) / (lb - le))))


@dataclass
class EpisodePlan:
    """How one episode runs: each chunk comes from the explorer with probability ``rho``."""

    rho: float
    """Probability that a chunk of this episode runs the explorer (EpsMix and budget: 0 or 1)."""
    kind: Literal["baseline", "explorer", "mix"]
    """What the episode's outcome tells the gate about."""
    gate_rho: float = 0.0
    """The gate's ρ when the episode started (for the ρ-over-time metric)."""
    explore_prob: float = 0.0
    """Probability, before EpsMix's coin, that a chunk runs the explorer: the episode's policy is the
    mixture explore_prob·explorer + (1 − explore_prob)·baseline (0 for forced baseline episodes)."""
    explorer_chunks: int = 0
    """Chunks that ran the explorer so far."""
    chunks: int = 0
    """Chunks run so far."""


@dataclass
class EpisodeRecord:
    """One finished training episode, for the safety metrics and the benchmark."""

    env_steps: int
    value: float
    kind: str
    gate_rho: float
    explorer_share: float
    baseline_lower: float
    threshold: float


class ConservativeGate:
    """Baseline and explorer statistics, ρ, and the per-episode decision of one training run."""

    def __init__(self, cfg: ConservativeConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.baseline_values: list[float] = []
        self.explorer_values: list[float] = []
        self.mix_values: list[tuple[float, float]] = []  # (value, explorer share) of StepMix episodes
        self.realized: list[float] = []  # every finished episode's value, for the budget
        self.episodes_started = 0
        self.in_flight: list[EpisodePlan] = []

    # -- bounds ----------------------------------------------------------------
    @property
    def _delta(self) -> float:
        return self.cfg.delta / 3.0

    def _bounds(self, values: list[float]) -> tuple[float, float]:
        v = np.asarray(values, dtype=float)
        if self.cfg.bound == "hoeffding":
            return hoeffding_bounds(v, self._delta, self.cfg.value_min, self.cfg.value_max)
        return clopper_pearson_bounds(int(round(v.sum())), len(v), self._delta)

    def baseline_bounds(self) -> tuple[float, float]:
        """(L_b, U_b) from the baseline episodes in the window."""
        w = self.cfg.baseline_window
        return self._bounds(self.baseline_values[-w:] if w > 0 else self.baseline_values)

    def explorer_lower(self) -> float:
        """L_e: lower bound on the explorer's value (StepMix: through the linear mixture model)."""
        w = self.cfg.explorer_window
        if self.cfg.variant == "stepmix":
            recent = self.mix_values[-w:]
            if not recent:
                return self.cfg.value_min
            share = float(np.mean([s for _, s in recent]))
            mix_lower = self._bounds([v for v, _ in recent])[0]
            if share <= 0.0:
                return self.cfg.value_min
            _, ub = self.baseline_bounds()
            return float(np.clip((mix_lower - (1.0 - share) * ub) / share, self.cfg.value_min, self.cfg.value_max))
        return self._bounds(self.explorer_values[-w:])[0]

    def rho(self) -> float:
        """ρ: the explorer's share that keeps the mixture above (1 − α)·V_b."""
        if self.cfg.variant == "monitor":
            return 1.0
        if len(self.baseline_values) < self.cfg.min_baseline_episodes:
            return 0.0
        lb, ub = self.baseline_bounds()
        le = self.explorer_lower()
        rho = epsmix_rho(self.cfg.alpha, lb, ub, le)
        if self.cfg.guarantee_window and rho > 0.0:
            rho = min(rho, window_rho(self.cfg.alpha, self.cfg.delta, self.cfg.guarantee_window, lb, le))
        return rho

    def threshold(self) -> float:
        """(1 − α)·L_b: the value an episode should not fall below."""
        return (1.0 - self.cfg.alpha) * self.baseline_bounds()[0]

    def budget_margin(self) -> float:
        """Pessimistic cumulative margin if the next episode ran the explorer (≥ 0: it may).

        Every episode so far, in flight, and the next one counts at the lower bound of the policy it ran
        (baseline: L_b; explorer: L_e; a mixture in between) against (1 − α)·U_b each.
        """
        lb, ub = self.baseline_bounds()
        le = self.explorer_lower()
        n_b, n_e = len(self.baseline_values), len(self.explorer_values)
        mixed = sum(s * le + (1.0 - s) * lb for _, s in self.mix_values)
        pending = sum(p.explore_prob * le + (1.0 - p.explore_prob) * lb for p in self.in_flight)
        total = n_b + n_e + len(self.mix_values) + len(self.in_flight) + 1
        return float(n_b * lb + (n_e + 1) * le + mixed + pending - (1.0 - self.cfg.alpha) * total * ub)

    # -- decisions -------------------------------------------------------------
    def begin_episode(self, force_baseline: bool = False) -> EpisodePlan:
        """Decide how the next episode runs; pass the plan back to :meth:`end_episode`."""
        self.episodes_started += 1
        cfg = self.cfg
        refresh = cfg.baseline_refresh_every > 0 and self.episodes_started % cfg.baseline_refresh_every == 0
        rho = self.rho()
        if cfg.variant == "monitor" and not force_baseline:
            plan = EpisodePlan(1.0, "explorer", rho, 1.0)
        elif force_baseline or refresh or len(self.baseline_values) < cfg.min_baseline_episodes:
            plan = EpisodePlan(0.0, "baseline", rho)
        elif cfg.variant == "epsmix":
            explore = self.rng.random() < rho
            plan = EpisodePlan(1.0 if explore else 0.0, "explorer" if explore else "baseline", rho, rho)
        elif cfg.variant == "stepmix":
            plan = EpisodePlan(rho, "explorer" if rho >= 1.0 else ("baseline" if rho <= 0.0 else "mix"), rho, rho)
        elif cfg.variant == "budget":
            explore = self.budget_margin() >= 0.0
            plan = EpisodePlan(1.0 if explore else 0.0, "explorer" if explore else "baseline", rho,
                               1.0 if explore else 0.0)
        else:
            raise ValueError(f"the gate is {cfg.variant!r}; nothing to decide")
        self.in_flight.append(plan)
        return plan

    def chunk_uses_explorer(self, plan: EpisodePlan) -> bool:
        """Coin flip of one chunk of ``plan`` (deterministic for whole-episode plans)."""
        use = plan.rho >= 1.0 or (plan.rho > 0.0 and self.rng.random() < plan.rho)
        plan.chunks += 1
        plan.explorer_chunks += int(use)
        return use

    def end_episode(self, plan: EpisodePlan, value: float) -> None:
        """Record the outcome of an episode run under ``plan``."""
        if self.cfg.bound == "clopper_pearson" and value not in (0.0, 1.0):
            raise ValueError(f"Clopper–Pearson bounds need 0/1 episode values, got {value}; "
                             "use bound='hoeffding' with value_min/value_max for returns.")
        value = float(np.clip(value, self.cfg.value_min, self.cfg.value_max))
        if plan in self.in_flight:
            self.in_flight.remove(plan)
        self.realized.append(value)
        if plan.kind == "baseline":
            self.baseline_values.append(value)
        elif plan.kind == "explorer":
            self.explorer_values.append(value)
        else:
            self.mix_values.append((value, plan.explorer_chunks / max(plan.chunks, 1)))

    # -- persistence -----------------------------------------------------------
    def state(self) -> dict:
        """JSON-able statistics (the random state included), for checkpoints."""
        return {"baseline": self.baseline_values, "explorer": self.explorer_values,
                "mix": [list(m) for m in self.mix_values], "realized": self.realized,
                "episodes_started": self.episodes_started, "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state` (episodes in flight when it was saved are dropped)."""
        self.baseline_values = [float(v) for v in state["baseline"]]
        self.explorer_values = [float(v) for v in state["explorer"]]
        self.mix_values = [(float(v), float(s)) for v, s in state["mix"]]
        self.realized = [float(v) for v in state["realized"]]
        self.episodes_started = int(state["episodes_started"])
        self.rng.bit_generator.state = state["rng"]


@dataclass
class _Window:
    values: list[float] = field(default_factory=list)
    below: int = 0
    rhos: list[float] = field(default_factory=list)
    explorer_share: list[float] = field(default_factory=list)
    steps: int = 0
    interventions: float = 0.0
    violations: float = 0.0


class GatedEnvs:
    """The gate applied to a vector of envs: one plan per env, chunk masks, and per-window safety metrics.

    Metrics (``safety/…``) per window of ``metrics_window`` episodes: ``below_threshold_frac`` (episodes whose
    value is under (1 − α)·L_b, the issue's definition; with 0/1 values a failed episode counts),
    ``window_value`` and ``window_below_threshold`` (the window's mean value against the same threshold,
    which is what the guarantee speaks about for 0/1 values), ``rho``, ``explorer_share``,
    ``baseline_lower``/``baseline_upper``/``explorer_lower``, and, when the envs report cumulative
    ``safety/interventions`` and ``safety/violations`` in their infos (a shield wrapper),
    ``shield_interventions_per_1k`` and ``constraint_violations``.
    """

    def __init__(self, cfg: ConservativeConfig, num_envs: int):
        self.cfg = cfg
        self.gate = ConservativeGate(cfg)
        self.plans = [self.gate.begin_episode(force_baseline=True) for _ in range(num_envs)]
        self.records: list[EpisodeRecord] = []
        self.window = _Window()
        self._last_counters = [(0.0, 0.0)] * num_envs
        self._shielded = False

    def explorer_mask(self) -> np.ndarray:
        """For the next chunk of every env: True where it runs the explorer, False for the baseline.

        ``monitor`` never changes what runs (all True): it only measures.
        """
        if self.cfg.variant == "monitor":
            for p in self.plans:
                p.chunks += 1
                p.explorer_chunks += 1
            return np.ones(len(self.plans), dtype=bool)
        return np.array([self.gate.chunk_uses_explorer(p) for p in self.plans], dtype=bool)

    def on_chunk(self, i: int, info: dict) -> None:
        """Account one executed chunk of env ``i`` (env steps and shield counters)."""
        self.window.steps += int(info.get("chunk_steps", 1))
        if "safety/interventions" in info:
            self._shielded = True
            now = (float(info["safety/interventions"]), float(info.get("safety/violations", 0.0)))
            last = self._last_counters[i]
            # Counters restart when a wrapper is rebuilt; a drop means a fresh count.
            self.window.interventions += now[0] - last[0] if now[0] >= last[0] else now[0]
            self.window.violations += now[1] - last[1] if now[1] >= last[1] else now[1]
            self._last_counters[i] = now

    def on_episode_end(self, i: int, value: float, env_steps: int, warmup: bool, run=None) -> None:
        """Record env ``i``'s finished episode, plan its next one, and log a window when it is full."""
        plan = self.plans[i]
        self.gate.end_episode(plan, value)
        lb, _ = self.gate.baseline_bounds()
        thr = (1.0 - self.cfg.alpha) * lb
        share = plan.explorer_chunks / max(plan.chunks, 1)
        self.records.append(EpisodeRecord(env_steps, value, plan.kind, plan.gate_rho, share, lb, thr))
        w = self.window
        w.values.append(value)
        w.below += int(value < thr)
        w.rhos.append(plan.gate_rho)
        w.explorer_share.append(share)
        self.plans[i] = self.gate.begin_episode(force_baseline=warmup)
        if len(w.values) >= self.cfg.metrics_window:
            if run is not None:
                run.log(env_steps, self.window_metrics())
            self.window = _Window()

    def window_metrics(self) -> dict[str, float]:
        """Safety metrics of the current window."""
        w = self.window
        lb, ub = self.gate.baseline_bounds()
        thr = (1.0 - self.cfg.alpha) * lb
        mean = float(np.mean(w.values)) if w.values else float("nan")
        m = {"safety/below_threshold_frac": w.below / max(len(w.values), 1), "safety/window_value": mean,
             "safety/window_below_threshold": float(mean < thr), "safety/threshold": thr,
             "safety/rho": float(np.mean(w.rhos)) if w.rhos else 0.0, "safety/rho_now": self.gate.rho(),
             "safety/explorer_share": float(np.mean(w.explorer_share)) if w.explorer_share else 0.0,
             "safety/baseline_lower": lb, "safety/baseline_upper": ub,
             "safety/explorer_lower": self.gate.explorer_lower(),
             "safety/baseline_episodes": float(len(self.gate.baseline_values))}
        if self._shielded:
            m["safety/shield_interventions_per_1k"] = 1000.0 * w.interventions / max(w.steps, 1)
            m["safety/constraint_violations"] = w.violations
        return m

    def state(self) -> dict:
        """JSON-able state for checkpoints."""
        return {"gate": self.gate.state(), "records": [vars(r) for r in self.records]}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state`; every env starts a fresh episode with a new plan."""
        self.gate.load_state(state["gate"])
        self.gate.in_flight.clear()
        self.records = [EpisodeRecord(**r) for r in state["records"]]
        self.plans = [self.gate.begin_episode() for _ in self.plans]

"""What the console knows about an adaptation session on a robot, without a terminal.

The learner (``steer adapt``) publishes :class:`steer.robot.spec.AdaptStatus` on
``<ns>/adapt_status``; :class:`steer.ops.console.robot.RobotLink` reads it beside the robot's
other topics and folds it into an :class:`AdaptView` (the newest status and the success curve of
this session). The operator's answers go back as :class:`steer.robot.spec.AdaptControl` on
``<ns>/adapt_control`` (unsigned: each one stops, pauses or judges, none moves the robot), except
starting, which is the signed ``adapt_start`` operator command (see :mod:`steer.robot.keys`), and the
confirmation of a robot's reset (``AdaptStatus.awaiting_reset``), the signed ``reset_done``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steer.robot.spec import AdaptStatus

SILENT_AFTER_S = 3.0
"""No status for this long: the learner is shown as silent (it publishes about once a second)."""

HISTORY = 200
"""Points of the success curve kept per session."""


@dataclass
class AdaptView:
    """The adaptation screen's values: the learner's newest status and this session's curve."""

    status: AdaptStatus | None = None
    """The newest status (None: no learner heard)."""
    age_s: float | None = None
    """Seconds since it arrived."""
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    """(episodes, success, threshold) of this session, one point per episode count."""

    @property
    def session(self) -> str:
        """The learner's session id (empty: none heard)."""
        return self.status.session if self.status is not None else ""

    @property
    def silent(self) -> bool:
        """True when the learner stopped publishing (or was never heard)."""
        return self.age_s is None or self.age_s > SILENT_AFTER_S

    def update(self, status: AdaptStatus) -> None:
        """Take a new status: a new session starts a new curve; a new episode count adds a point."""
        if self.status is not None and status.session != self.status.session:
            self.curve.clear()
        self.status = status
        if status.episodes <= 0:
            return
        point = (status.episodes, status.success, status.threshold)
        if self.curve and self.curve[-1][0] == status.episodes:
            self.curve[-1] = point  # the same episode, restated (the 1 Hz heartbeat)
        elif not self.curve or status.episodes > self.curve[-1][0]:
            self.curve.append(point)
            del self.curve[:-HISTORY]


def _num(x: float, spec: str = ".2f") -> str:
    return format(x, spec) if x == x else "-"  # NaN: not measured yet


def adapt_status_text(adapt: AdaptView, topic: str, domain_id: int | None) -> str:
    """The session panel of the adaptation screen (Rich markup)."""
    s = adapt.status
    if s is None:
        return (f"[yellow b]No learner heard on {topic} (domain {domain_id})[/]\n\n"
                f"Start one next to the robot:\nsteer adapt --policy runs/<bc> --domain-id {domain_id}")
    state = s.state.upper()
    style = {"RUNNING": "green", "PAUSED": "yellow", "WAITING": "yellow", "STOPPED": "red", "DONE": "cyan"}
    measured = s.success == s.success and s.threshold == s.threshold  # NaN: not measured yet
    verdict = ("  [green]≥[/]" if s.success >= s.threshold else "  [red]<[/]") if measured else ""
    lines = [f"session   {s.session[:12] or '-'}  [{style.get(state, 'yellow')} b]{state}[/]  {s.algo}",
             f"episodes  {s.episodes}   env steps {s.env_steps:,}",
             f"success   {_num(s.success)}{verdict} threshold {_num(s.threshold)}",
             f"baseline  {_num(s.baseline_success)} (on this robot)",
             f"ρ         {_num(s.rho)}   episode: {s.gate_choice or '-'}",
             f"shield    {s.shield_interventions} interventions",
             f"latents   {s.late_latents} late · {s.fallbacks} fallbacks"]
    if s.awaiting_reset:
        lines.append(f"[yellow b]awaiting reset[/] after episode {s.awaiting_reset[:12]}: C confirms")
    if s.last_error:
        lines.append(f"[red]{s.last_error[:70]}[/]")
    if adapt.silent and adapt.age_s is not None:
        lines.append(f"[yellow]learner silent for {adapt.age_s:.0f} s[/]")
    return "\n".join(lines)

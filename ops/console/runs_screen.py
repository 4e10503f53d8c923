"""The Runs screen: every run directory, live metric plots, config, checkpoints; start, stop, resume, compare.

What it shows comes from :mod:`steer.ops.run` (reading run directories); starting and stopping
``steer`` processes is :mod:`steer.ops.console.jobs`.
"""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from steer.ops.console import ConsoleError
from steer.ops.console.dialogs import CommandScreen, ConfirmScreen
from steer.ops.console.estop import BottomBar
from steer.ops.console.text import fmt
from steer.ops.run import MetricTail, RunInfo, checkpoints, config_lines, run_config, scan_runs


class RunsScreen(Screen):
    """Every run under the runs folder; the highlighted one's plots, config and checkpoints."""

    BINDINGS = [Binding("s", "start", "Start", tooltip="start a steer command"),
                Binding("x", "stop", "Stop", tooltip="stop the run (asks)"),
                Binding("r", "resume", "Resume", tooltip="resume from checkpoint"),
                Binding("m", "next_metric", "Metric", tooltip="plot the next metric"),
                Binding("c", "compare", "Compare", tooltip="mark run to compare")]

    def __init__(self):
        super().__init__()
        self.runs: dict[str, RunInfo] = {}
        self.selected: str | None = None
        self.compare_with: str | None = None
        self.metric: str | None = None
        self.tails: dict[str, MetricTail] = {}
        self.plotted: list[str] = []
        """Runs whose curve of ``metric`` is on the plot now."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with TabbedContent(id="run-tabs"):
            with TabPane("Plot", id="tab-plot"):
                yield PlotextPlot(id="plot")
            with TabPane("Config", id="tab-config"):
                yield VerticalScroll(Static(id="config"))
            with TabPane("Checkpoints", id="tab-ckpt"):
                yield DataTable(id="checkpoints", cursor_type="row")
        yield BottomBar()

    def on_mount(self) -> None:
        self.title = "steer console · Runs"
        table = self.query_one("#runs", DataTable)
        table.add_columns("run", "status", "kind", "step", "score", "SPS")
        self.query_one("#checkpoints", DataTable).add_columns("checkpoint", "size", "written")
        self.show_runs(scan_runs(self.app.settings.runs))  # the first frame already has the runs
        self.set_interval(self.app.settings.refresh_s, self.refresh_runs)

    # -- data --
    def refresh_runs(self) -> None:
        """Rescan the runs folder off the UI thread (the e-stop key must never wait for a disk)."""
        self._scan()

    @work(thread=True, exclusive=True, group="scan")
    def _scan(self) -> None:
        infos = scan_runs(self.app.settings.runs)
        try:
            self.app.call_from_thread(self.show_runs, infos)
        except RuntimeError:  # the app closed meanwhile
            pass

    def show_runs(self, infos: list[RunInfo]) -> None:
        """Put a scan into the table, keeping the operator's selection."""
        try:
            table = self.query_one("#runs", DataTable)
        except NoMatches:  # a scan that finished while the console was closing: its screen has no widgets left
            return
        for job in self.app.jobs.reap():
            if job.returncode and not job.stopped_by_operator:
                self.notify(f"{' '.join(job.argv[len(self.app.jobs.steer):])[:40]} exited with {job.returncode}: "
                            f"{job.last_line()[:120]}", severity="error", timeout=15)
        self.runs = {r.name: r for r in infos}
        keep = self.selected
        # Rebuilding the table moves its cursor; those moves are not the operator's selection.
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            for r in infos:
                score = f"{r.score_label} {r.score:.2f}" if r.score is not None else "-"
                mark = "* " if r.name == self.compare_with else ""
                name = r.name if len(r.name) <= 22 else "…" + r.name[-21:]  # a nested run's own name is last
                table.add_row(mark + name, r.status, r.kind_label, f"{r.step:,}", score,
                              fmt(r.sps, ".0f"), key=r.name)
            if keep in self.runs:
                table.move_cursor(row=table.get_row_index(keep), animate=False)
        if keep not in self.runs and infos:
            self.select(infos[0].name)
        elif keep in self.runs:
            self.show_details()
        self.redraw_plot()

    def tail(self, name: str) -> MetricTail:
        if name not in self.tails:
            self.tails[name] = MetricTail(self.app.settings.runs / name / "metrics.jsonl")
        t = self.tails[name]
        t.poll()
        return t

    def select(self, name: str) -> None:
        if name == self.selected:
            return
        self.selected = name
        if name not in self.runs:
            return
        self._pick_metric()
        self.show_details()
        self.redraw_plot()

    def _pick_metric(self) -> None:
        """Keep the plotted metric if the selected run has it, else its score (or its first metric)."""
        keys = self.tail(self.selected).keys() if self.selected else []
        if self.metric not in keys:
            preferred = [k for k in ("charts/route_completion", "charts/success_rate", "eval/success_rate",
                                     "charts/episodic_return", "losses/diffusion") if k in keys]
            self.metric = (preferred or keys or [None])[0]

    def show_details(self) -> None:
        """The selected run's config and checkpoints (checkpoints appear while it trains)."""
        run = self._current()
        if run is None:
            return
        lines = config_lines(run_config(run.path), 76)
        self.query_one("#config", Static).update("\n".join(lines) or "no config.json")
        ck = self.query_one("#checkpoints", DataTable)
        rows = [(c.name, f"{c.size_bytes / 1e6:.2f} MB", time.strftime("%Y-%m-%d %H:%M", time.localtime(c.modified)))
                for c in checkpoints(run.path)]
        if [tuple(ck.get_row_at(i)) for i in range(ck.row_count)] != rows:
            ck.clear()
            for row in rows:
                ck.add_row(*row)

    def redraw_plot(self) -> None:
        plot = self.query_one("#plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if self.metric is None:  # the selected run had no metrics yet when it was selected
            self._pick_metric()
        names = [n for n in (self.selected, self.compare_with) if n and n in self.runs]
        drawn: list[str] = []
        for name in dict.fromkeys(names):
            if self.metric is None:
                break
            steps, values = self.tail(name).series(self.metric)
            if steps:
                plt.plot(steps, values, label=name[:16], marker="braille")
                drawn.append(name)
        plt.title(f"{self.metric or 'no metrics yet'}" + (f" · {self.selected} vs {self.compare_with}"
                                                           if self.compare_with and self.compare_with != self.selected
                                                           else ""))
        self.plotted = drawn
        plot.refresh()

    # -- events and actions --
    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.select(event.row_key.value)

    def _current(self) -> RunInfo | None:
        return self.runs.get(self.selected or "")

    def action_next_metric(self) -> None:
        if not self.selected:
            return
        keys = self.tail(self.selected).keys()
        if keys:
            i = keys.index(self.metric) + 1 if self.metric in keys else 0
            self.metric = keys[i % len(keys)]
            self.redraw_plot()

    def action_compare(self) -> None:
        """Mark the highlighted run as the one to compare with (again: unmark)."""
        if self.selected is None:
            return
        self.compare_with = None if self.compare_with == self.selected else self.selected
        self.show_runs(list(self.runs.values()))  # the marked run gets a "*" and the plot names both

    def action_start(self) -> None:
        def started(command: str | None) -> None:
            if not command:
                return
            try:
                job = self.app.jobs.start(command)
            except ConsoleError as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"started pid {job.process.pid}: steer {command}")

        self.app.push_screen(CommandScreen(), started)

    def action_stop(self) -> None:
        run = self._current()
        if run is None:
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                pid = self.app.jobs.stop(run)
            except ConsoleError as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"interrupted {run.name} (pid {pid}); resume it with r")

        self.app.push_screen(ConfirmScreen(f"Stop {run.name}? It can be resumed from its last checkpoint."),
                             confirmed)

    def action_resume(self) -> None:
        run = self._current()
        if run is None:
            return
        try:
            job = self.app.jobs.resume(run)
        except ConsoleError as err:
            self.notify(str(err), severity="error")
            return
        self.notify(f"resuming {run.name} (pid {job.process.pid})")


# -- robots --------------------------------------------------------------------------

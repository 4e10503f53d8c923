"""The console's modal dialogs: yes/no, a command line to start, a robot to connect to, a run to promote."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList

from steer.ops.console import ConsoleError


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y`` / ``n`` or the buttons."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", tooltip="yes"),
                Binding("n,escape", "answer(False)", "No", tooltip="no")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no", variant="primary")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class CommandScreen(ModalScreen[str | None]):
    """Asks for a ``steer`` command line to start."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Start a run: steer …")
            yield Input(placeholder="dsrl --policy runs/bc --name dsrl2", id="command")
            yield Label("enter: start · escape: cancel · ctrl+e: E-STOP (e types an e here)", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConnectScreen(ModalScreen[str | None]):
    """Asks for the DDS domain id and namespace of the robot to watch."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Connect to a robot: DOMAIN_ID [NAMESPACE]")
            yield Input(value=self.current, id="robot-address")
            yield Label("enter: connect · escape: cancel · ctrl+e: E-STOP", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AddPolicyScreen(ModalScreen[str | None]):
    """Asks for the path of an ONNX file exported elsewhere, to copy into the policies folder."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a policy: path of an exported .onnx file")
            yield Input(placeholder="/path/to/policy.onnx", id="policy-path")
            yield Label("enter: add · escape: cancel · ctrl+e: E-STOP", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickRunScreen(ModalScreen[str | None]):
    """Pick a run with checkpoints to promote."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Promote which run? (export + make it the robot's policy)")
            yield OptionList(*self.names, id="pick")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.names[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


def signing_link(screen, no_key: str):
    """The app's robot link when it can sign operator commands; else None, after saying why in one sentence
    (``no_key``: what cannot be done without an operator key)."""
    link = screen.app.link
    if link is None:
        screen.notify("no robot connected", severity="error")
        return None
    if link.key is None:
        screen.notify(no_key + (f" ({link.key_error})" if link.key_error else ""), severity="error")
        return None
    return link


def confirm_then_send(screen, link, question: str, send, sent: str) -> None:
    """Ask ``question``; on yes (and the same link still connected) call ``send()`` and say ``sent``, or the
    refusal's one sentence."""
    def confirmed(yes: bool | None) -> None:
        if not yes or screen.app.link is not link:
            return
        try:
            send()
        except ConsoleError as err:
            screen.notify(str(err), severity="error")
            return
        screen.notify(sent)

    screen.app.push_screen(ConfirmScreen(question), confirmed)

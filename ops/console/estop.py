"""The console's e-stop keys and the E-STOP label that every screen shows.

Two keys publish the latched e-stop, both *priority* bindings of the app, so they act before
any screen, dialog or widget sees the key, over the help screen and under every dialog:

* ``e`` everywhere except while a text field has focus (a command line such as ``steer …``
  must be typeable, and it is full of e's);
* ``ctrl+e`` everywhere, text fields included (it overrides the field's end-of-line key).

The label sits at the left of the bottom bar, before the footer, so no screen width cuts it off.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Input, Static

ESTOP_BINDINGS = [
    Binding("e", "estop_key", "E-STOP", show=False, priority=True, tooltip="E-STOP now (latched)"),
    Binding("ctrl+e", "estop", "E-STOP", show=False, priority=True, tooltip="E-STOP, in text too"),
]
"""The app's e-stop bindings (see the module docstring for why there are two)."""

ESTOP_HELP = ("[b]e-stop[/b] works over this help and every\n"
              "dialog; in a text field e types an e,\n"
              "so press ctrl+e there.")
"""The help screen's explanation of the two keys."""


def typing_in_a_field(app) -> bool:
    """True while a text field has focus: a plain ``e`` then types instead of stopping."""
    return isinstance(app.focused, Input)


class EstopLabel(Static):
    """The always-visible ``e / ^e E-STOP`` label; clicking it sends the e-stop too."""

    def __init__(self) -> None:
        super().__init__(" e ^e E-STOP ", id="estop-label")

    def on_click(self) -> None:
        self.app.action_estop()


class BottomBar(Horizontal):
    """The E-STOP label, then the screen's footer (which may be cut off at the right)."""

    def compose(self):
        yield EstopLabel()
        yield Footer()

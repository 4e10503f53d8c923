"""The operator console (Textual): runs, robots, policies and adaptation in one terminal app.

Modules: :mod:`~steer.ops.console.app` (the app and its help), one module per screen
(``runs_screen``, ``robot_screen``, ``policies_screen``, ``adapt_screen``), ``dialogs``, ``text``,
and the plain classes the screens are thin layers over, which tests drive without a terminal:
``jobs`` (the ``steer`` child processes the console starts and stops), ``robot`` (the DDS
link to a robot), ``adapt`` (a learner's adaptation session, read through that link) and
``policies`` (exported ONNX files, promotion). Reading run directories
is :mod:`steer.ops.run`. The CSS is ``console.tcss`` beside these files. This package
imports nothing from Textual, so the plain classes work without it.
"""


class ConsoleError(Exception):
    """Something the operator asked for that cannot be done: one sentence, shown in the console."""

    user_facing = True

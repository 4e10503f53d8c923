"""Errors a user of the robot side can cause."""


class RobotError(Exception):
    """A user-caused error (bad policy file, wrong config, missing topic): one sentence, no traceback.

    ``user_facing`` tells the ``steer`` CLI to print the message instead of a traceback.
    """

    user_facing = True


class PolicyRefused(RobotError):
    """An ONNX policy that cannot run on this robot (malformed, mismatched, wrong shapes)."""

"""Errors that reach a user as one line, never as a traceback."""


class ReaflowError(Exception):
    """A problem with input or settings that the user can fix.

    The CLI and DAG tasks print ``str(error)`` alone; the message must say what
    was wrong (naming the file or setting) and what was expected.
    """


class SettingsError(ReaflowError):
    """A setting has a wrong value."""


class InputError(ReaflowError):
    """An input file or folder is missing or not in the expected format."""

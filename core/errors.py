"""The one exception type the CLI turns into a single line on stderr."""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Library code raises it for anything the user can fix (a missing file, a corrupt checkpoint,
    a wrong scale); the CLI prints `error: <message>` and exits non-zero without a traceback.
    """

"""The one exception type that command-line entry points turn into a one-line message."""


class RbmnetError(Exception):
    """Bad input or state the user can fix; the CLI prints it as one line and exits non-zero."""

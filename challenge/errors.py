"""Errors that the command line turns into one-line messages and trustworthy exit codes."""


class UsageError(ValueError):
    """Bad input from the user (parameters, files, folders): exit code 2, no traceback."""

    exit_code = 2

"""Errors that the command line turns into one-line messages and trustworthy exit codes, and the
words a message uses for an argument: a notebook has no ``--force``, a shell has no ``force=True``."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

__all__ = ["UsageError", "argument", "command_line"]

_command_line = False  # set by command_line(): messages name flags


class UsageError(ValueError):
    """Bad input from the user (parameters, files, folders): exit code 2, no traceback."""

    exit_code = 2


def argument(name: str, value: object = None, *, flag: str | None = None) -> str:
    """How a message names the argument ``name`` of the function called (and the ``value`` given,
    or to give: ``True`` for a switch).

    Parameters
    ----------
    name : str
        The keyword argument, as a Python caller passes it (``k_private``).
    value : object, optional
        Shown after the name: ``name=value`` to a Python caller, ``--flag value`` on the command
        line (``True`` shows the flag alone).
    flag : str, optional
        The command line's flag when it is not ``--name`` with ``-`` for ``_``.

    Returns
    -------
    str
        ``k_private``, ``force=True`` or ``mode='inside'`` from the Python API; ``--k-private``,
        ``--force`` or ``--mode inside`` inside :func:`command_line`.
    """
    if _command_line:
        flag = flag or "--" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {value}"
    return name if value is None else f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"


@contextmanager
def command_line() -> Iterator[None]:
    """Inside the block, :func:`argument` names the command line's flags: the command tree runs
    each command in it, so its messages stay those of the tool's options.  A process started
    inside by spawning (a Dask worker) does not inherit it: check arguments before sending work out."""
    global _command_line
    before, _command_line = _command_line, True
    try:
        yield
    finally:
        _command_line = before

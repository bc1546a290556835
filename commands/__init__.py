"""The command-line tree: a leaf that composes the libraries and that nothing imports.

``instahide`` is :mod:`commands.main`, ``verify`` is :mod:`commands.verify`; each other module adds
the subcommands of one area. Shared helpers (one-line errors, exit codes) are in :mod:`commands.common`.
"""

"""Exceptions the command line turns into one clear line and a non-zero exit."""


class UsageError(Exception):
    """An expected, user-facing failure (bad file, bad option): no traceback, exit 2."""

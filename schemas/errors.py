"""Exceptions every part may raise and the command line turns into one clear line."""


class UsageError(Exception):
    """An expected, user-facing failure (bad file, bad option): no traceback, exit 2."""


class TableError(UsageError):
    """A data file that cannot be read or lacks what is asked of it; names the file."""

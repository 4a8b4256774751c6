"""magtok's own error types (bottom layer: no magtok imports).

An error a user can fix (a bad config, a missing or existing file, a refused resume) is raised as a
:class:`UserError`. The ``magtok`` command prints such an error as one line that names the problem
and the fix, with exit code 2; any other exception is a bug (or out of memory, or a broken install)
and shows its traceback.

The subclasses also derive from the matching built-in exception, so ``except ValueError`` or
``pytest.raises(FileNotFoundError)`` keep working where magtok raised those before.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to do; the CLI prints it without a traceback."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is wrong (names the key, the value and what is accepted)."""


class InputError(UserError, ValueError):
    """An input (a file, a tensor, an argument) cannot be used as given."""


class MissingError(UserError, FileNotFoundError):
    """A file or folder that is needed does not exist."""


class ExistsError(UserError, FileExistsError):
    """An output already exists and the user did not ask to replace it."""


class ResumeError(UserError, ValueError):
    """A run cannot be resumed as asked (e.g. the preset or the data geometry changed)."""


__all__ = ["ConfigError", "ExistsError", "InputError", "MissingError", "ResumeError", "UserError"]

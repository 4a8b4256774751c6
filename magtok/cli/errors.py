"""CLI error types (a module of their own: ``python -m magtok.cli.main`` imports main.py twice).

``UserError`` is magtok's own user-error type (:mod:`magtok.errors`); the CLI maps it, and only it,
to a one-line message with exit code 2.
"""

from magtok.errors import ConfigError, ExistsError, InputError, MissingError, ResumeError, UserError

__all__ = ["ConfigError", "ExistsError", "InputError", "MissingError", "ResumeError", "UserError"]

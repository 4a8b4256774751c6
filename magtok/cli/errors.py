"""CLI error types (a module of their own: ``python -m magtok.cli.main`` imports main.py twice)."""


class UserError(Exception):
    """An error whose message tells the user what to do; printed without a traceback."""

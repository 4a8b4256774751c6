"""The ``magtok`` command: thin subcommands over the public API."""

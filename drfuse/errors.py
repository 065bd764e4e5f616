"""Errors a user can fix (bad input, bad configuration): the CLI prints them as one line, exit 1."""


class UserError(Exception):
    """Bad input or configuration. The message must name the file or setting at fault."""

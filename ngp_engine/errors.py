"""Errors that are the user's to fix: the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input (file, field or value); the message names it and says what is wrong."""

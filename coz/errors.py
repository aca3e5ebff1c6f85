"""Errors that mean "the user asked for something that cannot work": the CLI prints them as one
line and exits with status 2, without a traceback."""


class CozError(Exception):
    """A user-facing error whose message alone says what is wrong and how to fix it."""

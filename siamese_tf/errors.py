"""Errors that mean "the user's input is wrong", as opposed to a bug.

Entry points in `launch/` turn an `InputError` into one line on stderr and exit status 2;
every other exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input (a flag, a config value, a dataset): the message says what to do."""

"""The one exception type that means "the user gave us something we cannot use"."""


class UserInputError(Exception):
    """Bad input from the user: the CLI prints the message as one sentence and exits with code 2."""

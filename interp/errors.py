"""The one exception type that means "the user gave us something we cannot use"."""


class UserInputError(Exception):
    """Bad input from the user: the CLI prints the message as one sentence and exits with code 2."""


def check_at_least(flag: str, value: int | None, minimum: int) -> None:
    """UserInputError unless ``value`` (None: not given) is at least ``minimum``; ``flag`` names the option."""
    if value is not None and value < minimum:
        raise UserInputError(f"{flag} must be at least {minimum}, not {value}.")

"""The exception that means "the user gave us something we cannot use" (``OutputError``: an output that cannot be
written), and the checks that raise it."""

import math


class UserInputError(Exception):
    """Bad input from the user: the CLI prints the message as one sentence and exits with code 2."""


class OutputError(UserInputError):
    """An output that cannot be written (a full disk, an I/O error): told like bad input, one sentence naming the
    path and the cause (exit code 2); ``kept`` says what is left of an earlier output there."""

    def __init__(self, path, cause: str, kept: str):
        self.path, self.cause = path, cause
        super().__init__(f"cannot write {str(path)!r}: {cause}; {kept}.")


def check_at_least(flag: str, value: int | None, minimum: int) -> None:
    """UserInputError unless ``value`` (None: not given) is at least ``minimum``; ``flag`` names the option."""
    if value is not None and value < minimum:
        raise UserInputError(f"{flag} must be at least {minimum}, not {value}.")


def parse_floats(flag: str, text: str) -> list[float]:
    """One or more finite numbers from comma-separated ``text``; UserInputError naming ``flag`` otherwise."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserInputError(f"{flag} {text!r} is not a number or a comma-separated list of numbers.") from None
    if not values or any(not math.isfinite(v) for v in values):
        raise UserInputError(f"{flag} {text!r} must be one or more finite numbers.")
    return values

"""Options checked against the types a command's config dataclass declares, before any work.

Config files (``interp pipeline --config``, ``interp sweep --config``) and the Python API's keyword arguments go
through ``check_options``: an unknown option or a value of another type is one sentence naming where it was given,
never a TypeError halfway through a run.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from interp.errors import UserInputError


@cache
def declared_types(cls: type) -> dict[str, typing.Any]:
    """Option name -> declared type of a (dataclass) config class, its bases' fields included."""
    return typing.get_type_hints(cls)


def check_options(values: Mapping[str, object], declared: Mapping[str, typing.Any], where: str) -> None:
    """UserInputError for the first option in ``values`` that ``declared`` (option -> type) does not name,
    or whose value does not fit its type; ``where`` starts the sentence (``"config file 'p.toml': [diff]"``)."""
    for option, value in values.items():
        if option not in declared:
            close = difflib.get_close_matches(str(option), list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserInputError(f"{where} has no option {option!r}{hint}.")
        if not fits(value, declared[option]):
            raise UserInputError(f"{where} {option} should be {describe(declared[option])}, not {value!r}.")


def fits(value: object, expected: typing.Any) -> bool:
    """Whether ``value`` (a TOML value or a Python argument) is of the declared type ``expected``: an int also fits
    a float, a bool fits only a bool, a list fits a tuple or list of fitting items, text fits a path."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if expected is type(None):
        return value is None
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, int | float)
    if expected is Path:
        return isinstance(value, str | os.PathLike)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed-length tuple: one type per item
            return len(value) == len(args) and all(fits(v, arg) for v, arg in zip(value, args))
        return all(fits(v, args[0] if args else typing.Any) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, expected) if isinstance(expected, type) else True


def describe(expected: typing.Any) -> str:
    """The declared type in words: "a whole number", "a list of whole numbers", "text" ..."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args if arg is not type(None))
    if origin in (tuple, list):
        return f"a list of {_plural(args[0] if args else typing.Any)}"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", Path: "a path",
            dict: "a table"}.get(expected, getattr(expected, "__name__", str(expected)))  # fmt: skip


def _plural(expected: typing.Any) -> str:
    return {int: "whole numbers", float: "numbers", bool: "true/false values", str: "texts"}.get(expected, "values")

"""Errors that mean "the user gave us something wrong".

They live in the lowest layer so every package can raise them; the CLI turns any
`InputError` into a one-line message and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none):
    library errors often span many lines, and ours must stay one."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class InputError(ValueError):
    """Bad input from the user (file, name, option); reported as one line."""


class UnknownOperationError(InputError):
    """An operation name that is not in the registry / op set."""


class GenotypeError(InputError):
    """A genotype that cannot be read or does not fit the space."""

"""Errors that mean "the user gave us something wrong".

They live in the lowest layer so every package can raise them; the CLI turns any
`InputError` into a one-line message and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (file, name, option); reported as one line."""


class UnknownOperationError(InputError):
    """An operation name that is not in the registry / op set."""


class GenotypeError(InputError):
    """A genotype that cannot be read or does not fit the space."""

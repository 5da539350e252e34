"""The one place that imports NNI: lazily, with a one-line error when it is missing."""

from __future__ import annotations

from types import ModuleType

from search_spaces.errors import InputError, first_line

INSTALL_HINT = "pip install 'hw-nas[nni]'"


def require_nni() -> ModuleType:
    """`nni` itself, or a one-line `InputError` saying how to install the optional extra.

    NNI 3.0 also needs pytorch-lightning; both come with the `nni` extra."""
    try:
        import nni
        import nni.nas.strategy  # noqa: F401  (the one-shot strategies load Lightning)
    except ImportError as exc:
        raise InputError(f"the NNI bridge needs NNI 3.0 and pytorch-lightning "
                         f"({first_line(exc)}): {INSTALL_HINT}") from None
    return nni

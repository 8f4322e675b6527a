"""Checks of values that come from users (counts, rates, arrays about to be stored)."""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError, NonFiniteError


def check_positive(value: float | int | None, what: str, *, integer: bool = False) -> None:
    """A finite number above zero (None passes): the library's check of counts and rates."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        raise InputError(f"{what} must be a positive {'whole number' if integer else 'number'}, got {value!r}")


def check_finite(array, what: str) -> None:
    """Raise NonFiniteError("<what>: N non-finite values ...") unless every value is finite.

    `what` names the thing (a video path, a checkpoint); call it on every batch of embeddings or
    event features before they are written anywhere."""
    a = array.detach().float().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    if a.dtype.kind not in "fc":
        return
    ok = np.isfinite(a)
    if not ok.all():
        bad = int(a.size - np.count_nonzero(ok))
        kinds = "NaN" if np.isnan(a).any() else ""
        if np.isinf(a).any():
            kinds = f"{kinds} and inf" if kinds else "inf"
        raise NonFiniteError(f"{what}: {bad} of {a.size} values are not finite ({kinds})")


def json_safe(obj):
    """`obj` with non-finite floats as None: strict JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj

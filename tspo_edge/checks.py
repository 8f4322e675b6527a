"""Checks of values that come from users (counts, rates, arrays about to be stored)."""

from __future__ import annotations

import math

import numpy as np

from tspo_edge.errors import InputError, NonFiniteError


def check_positive(value: float | int | None, what: str, *, integer: bool = False) -> None:
    """A finite number above zero (None passes): the library's check of counts and rates."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        raise InputError(f"{what} must be a positive {'whole number' if integer else 'number'}, got {value!r}")


def in_range(value, lo: float, hi: float, *, integer: bool = False) -> bool:
    """Whether `value` is a finite number (a whole one with `integer`) from `lo` to `hi`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if integer and not (isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi


def range_text(lo: float, hi: float, integer: bool = False) -> str:
    """ "a number from 0 to 86400", "a positive whole number (at most 256)" (the words of a refusal)."""
    if integer and lo == 1:
        return f"a positive whole number (at most {_num(hi)})"
    return f"{'a whole number' if integer else 'a number'} from {_num(lo)} to {_num(hi)}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def check_range(value, what: str, lo: float, hi: float, *, integer: bool = False) -> None:
    """A finite number from `lo` to `hi` (None passes): InputError naming `what` otherwise."""
    if value is not None and not in_range(value, lo, hi, integer=integer):
        raise InputError(f"{what} must be {range_text(lo, hi, integer)}, got {value!r}")


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

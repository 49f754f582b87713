"""Checks of the values a DAG gives the provider's operators, sensors and triggers.

Each value is checked twice where it can be: when the DAG is parsed (a literal) and as rendered
(a template), with one function, so both say the same. A check names the argument and never
"fixes" a value silently: ``2024.9`` is not the year 2024, a blank path is no path.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "check_dataset",
    "check_max_consecutive_errors",
    "check_path_text",
    "check_seconds",
    "has_text",
    "id_filter",
    "int_list",
    "str_list",
    "year_or_none",
]

_WHOLE_TEXT = re.compile(r"[+-]?[0-9]+")


def check_max_consecutive_errors(value: Any) -> int:
    """``max_consecutive_errors`` checked: an integer >= 1 (else ``ValueError`` naming it)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_consecutive_errors must be an integer >= 1, got {value!r}")
    return value


def check_seconds(value: Any, what: str) -> float:
    """A number of seconds >= 0 (``poke_interval``, ``first_delay``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def check_dataset(dataset: Any) -> str:
    """A CKAN dataset id or name: non-blank text, stripped."""
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError(f"dataset must be a CKAN dataset id or name, got {dataset!r}")
    return dataset.strip()


def check_path_text(value: Any, what: str) -> None:
    """Refuse a path or URL string that is blank or padded with whitespace.

    ``"  "`` (a template that rendered blank) would be a file named with spaces in the current
    folder, and ``" /lake/x.csv"`` a relative path: a task must not write there.
    """
    if isinstance(value, str) and (not value.strip() or value != value.strip()):
        problem = "is blank" if not value.strip() else "has leading or trailing whitespace"
        raise ValueError(f"{what} {problem} ({value!r}): give a path or URL")


def has_text(value: Any) -> bool:
    """Whether ``value`` is text or holds text (a template, rendered only at run time)."""
    if isinstance(value, str):
        return True
    if isinstance(value, Sequence | set | frozenset):
        return any(isinstance(item, str) for item in value)
    return False


def _whole(item: Any, what: str, value: Any) -> int:
    """One whole number: an int, a float without a fraction, or text of digits.

    Never truncated: ``2024.9`` (a native template, a computed value) is not 2024, and a bool
    is no number.
    """
    if isinstance(item, bool):
        raise ValueError(f"{what} must be whole numbers, got {value!r} (a bool)")
    if isinstance(item, numbers.Integral):
        return int(item)
    if isinstance(item, numbers.Real):
        number = float(item)
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise ValueError(f"{what} must be whole numbers, got {value!r} ({item!r} has a fraction)")
    if isinstance(item, str) and _WHOLE_TEXT.fullmatch(item.strip()):
        return int(item.strip())
    raise ValueError(f"{what} must be whole numbers, got {value!r}")


def year_or_none(value: Any, what: str = "year") -> int | None:
    """A year from an int, text (a rendered template) or None/blank (no year)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number or None, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number or None, got {value!r}") from None


def str_list(value: Any, what: str) -> list[str] | None:
    """A list of text from a list, or from one text (comma-separated, as a template renders)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",")]
        return [v for v in items if v]
    if isinstance(value, Sequence | set | frozenset):
        return [str(v) for v in value]
    raise TypeError(f"{what} must be a list of text, got {value!r}")


def int_list(value: Any, what: str) -> list[int] | None:
    """A list of integers from a list, one number, or text (``2024`` or ``2023, 2024``)."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = str_list(value, what) or []
    elif isinstance(value, Sequence | set | frozenset):
        items = list(value)
    else:
        items = [value]
    return [_whole(item, what, value) for item in items]


def id_filter(value: Any, what: str) -> list[int]:
    """ONS ids of a filter: None is no filter ([]); an empty value is refused.

    A template that renders empty (``""``, ``"[]"``) or an empty list would drop the filter
    and export every plant, agent or source: never silently.
    """
    if value is None:
        return []
    ids = int_list(value, what) or []
    if not ids:
        raise ValueError(
            f"{what} is empty ({value!r}): that would drop the filter and export everything; "
            "give None (the default) for no filter"
        )
    return ids

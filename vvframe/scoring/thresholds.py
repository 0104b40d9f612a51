"""Decision thresholds: a tuned one by name (``eer``, ``mindcf@P``, ``far@F``, as the eval stage writes them) or a
number, read the same way by the test stage, ``vvframe verify``, ``vvframe serve`` and the Python API."""

from __future__ import annotations

import math
from collections.abc import Mapping

from vvframe.core.errors import BadValue

TUNED_NAMES = "eer, mindcf@P, far@F"


def pick_threshold(
    choice: str | float,
    tuned: Mapping[str, float],
    *,
    setting: str = "threshold",
    untuned: str = ": there are no tuned thresholds (the eval stage has not run); give a number",
) -> tuple[str, float]:
    """``(name, value)`` of ``choice``: a finite number (its name is the number as given) or the name of one of
    ``tuned``. A ``BadValue`` otherwise, starting ``<setting> '<choice>'``; ``untuned`` ends the message when
    nothing is tuned and a name is asked for."""
    try:
        value = float(choice)
    except (TypeError, ValueError):
        pass
    else:
        if not math.isfinite(value):
            raise BadValue(
                f"{setting} {choice!r}: a threshold must be a finite number or one of"
                f" {', '.join(sorted(tuned)) or f'the tuned names ({TUNED_NAMES})'}"
            )
        return str(choice), value
    name = str(choice)
    if name in tuned:
        return name, float(tuned[name])
    if not tuned:
        raise BadValue(f"{setting} {name!r}{untuned}")
    raise BadValue(f"{setting} {name!r} is not one of {', '.join(sorted(tuned))} or a number")

"""Decision thresholds: a tuned one by name (``eer``, ``mindcf@P``, ``far@F``, as the eval stage writes them), the
Bayes threshold of a calibrated run for a prior (``bayes@P``) or a number, read the same way by the test stage,
``vvframe verify``, ``vvframe serve`` and the Python API."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from vvframe.core.errors import BadValue

TUNED_NAMES = "eer, mindcf@P, far@F"
BAYES = "bayes@"  # bayes@P: the score at which a calibrated LLR reaches -logit(P)


def bayes_prior(choice: str | float, setting: str = "threshold") -> float | None:
    """The prior ``P`` of a ``bayes@P`` threshold name, None for any other choice; a ``BadValue`` when ``P`` is not
    a number in (0, 1)."""
    name = str(choice)
    if not name.startswith(BAYES):
        return None
    try:
        prior = float(name[len(BAYES) :])
    except ValueError:
        prior = math.nan
    if not 0.0 < prior < 1.0:
        raise BadValue(f"{setting} {name!r}: bayes@P needs a prior P in (0, 1), e.g. bayes@0.01")
    return prior


def pick_threshold(
    choice: str | float,
    tuned: Mapping[str, float],
    *,
    setting: str = "threshold",
    untuned: str = ": there are no tuned thresholds (the eval stage has not run); give a number",
    bayes: Callable[[float], float] | None = None,
) -> tuple[str, float]:
    """``(name, value)`` of ``choice``: a finite number (its name is the number as given), the name of one of
    ``tuned``, or ``bayes@P``: ``bayes(P)``, the score threshold of a calibration (None: there is none). A
    ``BadValue`` otherwise, starting ``<setting> '<choice>'``; ``untuned`` ends the message when nothing is tuned
    and a name is asked for."""
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
    prior = bayes_prior(name, setting)
    if prior is not None:
        if bayes is None:
            raise BadValue(f"{setting} {name!r}: a Bayes threshold needs a score calibration; run the calibrate stage")
        return name, float(bayes(prior))
    if name in tuned:
        return name, float(tuned[name])
    if not tuned:
        raise BadValue(f"{setting} {name!r}{untuned}")
    raise BadValue(f"{setting} {name!r} is not one of {', '.join(sorted(tuned))} or a number")

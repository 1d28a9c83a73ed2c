"""Start-up checks of the SLA settings (issue 12, item 5), called from auctions.checks."""

import math

from django.core import checks


def sla_errors(settings) -> list[checks.CheckMessage]:
    """CPX_SLA_QUALITY_WEIGHT finite and ≥ 0; CPX_SLA_PROBE_MAX_AGE_S a positive number."""
    errors = []
    weight = getattr(settings, "CPX_SLA_QUALITY_WEIGHT", 0.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight < 0
    ):
        errors.append(
            checks.Error(
                f"CPX_SLA_QUALITY_WEIGHT={weight!r} must be a finite number >= 0.",
                hint="How much lost reputation raises a provider's effective ask (0 turns it off; "
                "docs/sla.md).",
                id="auctions.E061",
            )
        )
    age = getattr(settings, "CPX_SLA_PROBE_MAX_AGE_S", 30)
    if isinstance(age, bool) or not isinstance(age, int | float) or not math.isfinite(age) or age <= 0:
        errors.append(
            checks.Error(
                f"CPX_SLA_PROBE_MAX_AGE_S={age!r} must be a positive number of seconds.",
                hint="The oldest latency probe echo CPX still counts; the default is 30.",
                id="auctions.E062",
            )
        )
    return errors

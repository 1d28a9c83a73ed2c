"""Start-up checks of the SLA settings (auctions.checks_sla): a bad weight or probe age stops start-up."""

from types import SimpleNamespace

import pytest

from auctions.checks_sla import sla_errors


@pytest.mark.parametrize(
    ("weight", "age", "ids"),
    [
        (0.5, 30.0, []),
        (0.0, 1, []),
        (-0.1, 30.0, ["auctions.E061"]),
        (float("inf"), 30.0, ["auctions.E061"]),
        ("0.5", 30.0, ["auctions.E061"]),
        (0.5, 0, ["auctions.E062"]),
        (0.5, float("nan"), ["auctions.E062"]),
        (True, False, ["auctions.E061", "auctions.E062"]),
    ],
)
def test_refuses_a_bad_weight_or_probe_age(weight, age, ids):
    settings = SimpleNamespace(CPX_SLA_QUALITY_WEIGHT=weight, CPX_SLA_PROBE_MAX_AGE_S=age)

    assert [error.id for error in sla_errors(settings)] == ids

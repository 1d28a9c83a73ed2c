"""The cloud–edge tier settings are checked at start-up (auctions/checks.py, ids E030 and E031), and a
round refuses to run under an invalid one rather than clearing on a half-read setting."""

import pytest

from auctions.checks import check_clearing_settings
from auctions.services.rounds import clearing_config
from config.errors import InvalidInput


def ids(messages) -> list[str]:
    return [message.id for message in messages]


class TestTierSettingsCheck:
    @pytest.mark.parametrize("mode", ["aware", "off"])
    def test_accepts_each_tier_mode(self, settings, mode):
        settings.CPX_TIER_CLEARING = mode

        assert not {"auctions.E030", "auctions.E031"} & set(ids(check_clearing_settings()))

    @pytest.mark.parametrize(
        ("name", "value", "error"),
        [
            ("CPX_TIER_CLEARING", "blind", "auctions.E030"),
            ("CPX_TIER_CLEARING", "", "auctions.E030"),
            ("CPX_TIER_SUBSTITUTION", 1.0, "auctions.E031"),
            ("CPX_TIER_SUBSTITUTION", -0.1, "auctions.E031"),
            ("CPX_TIER_SUBSTITUTION", True, "auctions.E031"),
        ],
    )
    def test_refuses_an_invalid_tier_setting(self, settings, name, value, error):
        setattr(settings, name, value)

        assert error in ids(check_clearing_settings())

    def test_a_round_refuses_an_invalid_tier_mode(self, settings):
        settings.CPX_TIER_CLEARING = "sometimes"

        with pytest.raises(InvalidInput):
            clearing_config()

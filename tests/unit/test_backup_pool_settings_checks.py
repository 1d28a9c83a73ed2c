"""The backup pool's settings are checked at start-up (auctions.E040–E042): a policy CPX does not know,
a share outside [0, 1] or a fee rate outside [0, 1] stops `manage.py check` and a worker's start."""

from decimal import Decimal

import pytest

from auctions.checks import check_backup_pool_settings


class TestBackupPoolSettingsCheck:
    @pytest.mark.parametrize(
        "changes",
        [
            {},
            {"CPX_BACKUP_POOL_POLICY": "all", "CPX_BACKUP_POOL_SHARE": 1},
            {
                "CPX_BACKUP_POOL_POLICY": "off",
                "CPX_BACKUP_POOL_SHARE": 0,
                "CPX_STANDBY_FEE_RATE": Decimal("0"),
            },
        ],
        ids=["defaults", "all", "off"],
    )
    def test_accepts_a_pool_that_can_run(self, settings, changes):
        for name, value in changes.items():
            setattr(settings, name, value)

        assert check_backup_pool_settings() == []

    @pytest.mark.parametrize(
        "changes, error",
        [
            ({"CPX_BACKUP_POOL_POLICY": "always"}, "auctions.E040"),
            ({"CPX_BACKUP_POOL_SHARE": 1.5}, "auctions.E041"),
            ({"CPX_BACKUP_POOL_SHARE": -0.1}, "auctions.E041"),
            ({"CPX_BACKUP_POOL_SHARE": float("nan")}, "auctions.E041"),
            ({"CPX_STANDBY_FEE_RATE": Decimal("-0.01")}, "auctions.E042"),
            ({"CPX_STANDBY_FEE_RATE": "lots"}, "auctions.E042"),
            ({"CPX_STANDBY_FEE_RATE": Decimal("NaN")}, "auctions.E042"),
        ],
    )
    def test_refuses_a_setting_the_pool_cannot_run_with(self, settings, changes, error):
        for name, value in changes.items():
            setattr(settings, name, value)

        assert [message.id for message in check_backup_pool_settings()] == [error]

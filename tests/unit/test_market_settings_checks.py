"""Clearing and pricing settings are checked at start-up (issue 12 item 8): each invalid value or
combination is a system-check error with a stable id, and `manage.py check` stops on it."""

import math
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from auctions import checks
from auctions.checks import check_clearing_settings
from auctions.services import rounds

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = (
    "CPX_UNIT_MECHANISM",
    "CPX_HETEROGENEOUS_MECHANISM",
    "CPX_HETEROGENEOUS_PAYMENT_RULE",
    "CPX_WELFARE_TIME_LIMIT_S",
    "CPX_ROUND_SEED",
    "CPX_ROUND_INTERVAL_S",
    "CPX_SWEEP_INTERVAL_S",
    "CPX_PRICING_INTERVAL_S",
    "CPX_PRICING_HORIZON_H",
    "CPX_PRICING_RECENT_ROUNDS",
    "CPX_PLATFORM_FEE_RATE",
    "CPX_MAX_JOB_BUDGET",
)


def ids(messages) -> list[str]:
    return [message.id for message in messages]


class TestClearingSettingsCheck:
    @pytest.mark.parametrize(
        "changes",
        [
            {},
            {"CPX_HETEROGENEOUS_MECHANISM": "welfare", "CPX_HETEROGENEOUS_PAYMENT_RULE": "vcg"},
            {"CPX_UNIT_MECHANISM": "sbba_buyer_lottery", "CPX_ROUND_SEED": 7},
            {"CPX_UNIT_MECHANISM": "trade_reduction", "CPX_PRICING_RECENT_ROUNDS": 0},
            {"CPX_PLATFORM_FEE_RATE": Decimal("0"), "CPX_WELFARE_TIME_LIMIT_S": 0.5},
        ],
        ids=["defaults", "welfare/vcg", "buyer lottery", "no pricing history", "no fee"],
    )
    def test_accepts_a_market_that_can_run(self, settings, changes):
        for name, value in changes.items():
            setattr(settings, name, value)

        assert check_clearing_settings() == []

    @pytest.mark.parametrize(
        "changes, error",
        [
            ({"CPX_UNIT_MECHANISM": "vcg"}, "auctions.E001"),
            ({"CPX_UNIT_MECHANISM": "huang"}, "auctions.E001"),
            ({"CPX_UNIT_MECHANISM": "McAfee"}, "auctions.E001"),
            ({"CPX_HETEROGENEOUS_MECHANISM": "milp"}, "auctions.E002"),
            ({"CPX_HETEROGENEOUS_MECHANISM": "welfare"}, "auctions.E003"),
            ({"CPX_HETEROGENEOUS_PAYMENT_RULE": "vcg"}, "auctions.E003"),
            (
                {"CPX_HETEROGENEOUS_MECHANISM": "welfare", "CPX_HETEROGENEOUS_PAYMENT_RULE": "none"},
                "auctions.E003",
            ),
            ({"CPX_WELFARE_TIME_LIMIT_S": 0.0}, "auctions.E004"),
            ({"CPX_WELFARE_TIME_LIMIT_S": -1.0}, "auctions.E004"),
            ({"CPX_WELFARE_TIME_LIMIT_S": math.inf}, "auctions.E004"),
            ({"CPX_WELFARE_TIME_LIMIT_S": math.nan}, "auctions.E004"),
            ({"CPX_WELFARE_TIME_LIMIT_S": 240.0, "CELERY_TASK_SOFT_TIME_LIMIT": 240}, "auctions.E005"),
            ({"CPX_ROUND_SEED": -1}, "auctions.E006"),
            ({"CPX_ROUND_INTERVAL_S": 0.0}, "auctions.E007"),
            ({"CPX_SWEEP_INTERVAL_S": -5.0}, "auctions.E007"),
            ({"CPX_PRICING_INTERVAL_S": math.inf}, "auctions.E007"),
            ({"CPX_PRICING_HORIZON_H": 0.0}, "auctions.E008"),
            ({"CPX_PRICING_RECENT_ROUNDS": -1}, "auctions.E009"),
            ({"CPX_PLATFORM_FEE_RATE": Decimal("1")}, "auctions.E010"),
            ({"CPX_PLATFORM_FEE_RATE": Decimal("-0.01")}, "auctions.E010"),
            ({"CPX_PLATFORM_FEE_RATE": Decimal("NaN")}, "auctions.E010"),
            ({"CPX_MAX_JOB_BUDGET": Decimal("0")}, "auctions.E011"),
            ({"CPX_CLEARING_RULE": "posted"}, "auctions.E013"),
            ({"CPX_THICK_BOOK_MIN_ORDERS": 0}, "auctions.E014"),
        ],
    )
    def test_refuses_each_invalid_setting_or_combination(self, settings, changes, error):
        for name, value in changes.items():
            setattr(settings, name, value)

        messages = check_clearing_settings()

        assert ids(messages) == [error]
        assert messages[0].is_serious()
        assert messages[0].hint
        assert any(name in messages[0].msg for name in changes)

    def test_names_the_missing_payment_rule_for_welfare(self, settings):
        settings.CPX_HETEROGENEOUS_MECHANISM = "welfare"

        (message,) = check_clearing_settings()

        assert "CPX_HETEROGENEOUS_PAYMENT_RULE=vcg" in message.msg
        assert "every round would refuse" in message.msg

    def test_asks_the_engine_too(self, settings, monkeypatch):
        # A rule the settings list admits but the engine does not know is still caught at start-up.
        monkeypatch.setattr(rounds, "UNIT_MECHANISMS", rounds.UNIT_MECHANISMS | {"fixed_price"})
        settings.CPX_UNIT_MECHANISM = "fixed_price"

        messages = check_clearing_settings()

        assert ids(messages) == ["auctions.E012"]
        assert "unknown_mechanism" in messages[0].msg

    def test_is_registered_under_its_tag(self):
        from django.core.checks import registry

        assert checks.TAG in registry.registry.tags_available()


def manage_check(**environment) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update(environment, DJANGO_SETTINGS_MODULE="config.settings.base")
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


class TestManageCheck:
    def test_stops_on_welfare_without_its_payment_rule(self):
        result = manage_check(CPX_HETEROGENEOUS_MECHANISM="welfare")

        assert result.returncode != 0
        assert "auctions.E003" in result.stderr
        assert "CPX_HETEROGENEOUS_PAYMENT_RULE=vcg" in result.stderr

    def test_passes_with_the_pair_set_together(self):
        result = manage_check(CPX_HETEROGENEOUS_MECHANISM="welfare", CPX_HETEROGENEOUS_PAYMENT_RULE="vcg")

        assert result.returncode == 0, result.stderr

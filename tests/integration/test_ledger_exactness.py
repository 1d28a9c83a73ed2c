"""Balances stay exact decimals on every backend (SQLite computes decimals in floats)."""

from decimal import Decimal

import pytest
from django.utils import timezone

from market.models import LedgerAccount
from market.selectors import ledger_is_balanced
from market.services.ledger import ledger_deposit, ledger_house_account, ledger_transfer
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class TestLedgerExactness:
    def test_spends_a_balance_to_exactly_zero_in_tenths(self):
        now = timezone.now()
        consumer = UserFactory(role="consumer")
        ledger_deposit(user=consumer, amount=Decimal("0.3"), now=now)
        account = LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user=consumer)
        fees = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)

        for _ in range(3):
            ledger_transfer(debit=account, credit=fees, amount=Decimal("0.1"), kind="FEE", now=now)

        account.refresh_from_db()
        assert account.balance == Decimal("0")
        assert ledger_is_balanced()

    def test_keeps_micro_amounts_exact_over_many_transfers(self):
        now = timezone.now()
        consumer = UserFactory(role="consumer")
        ledger_deposit(user=consumer, amount=Decimal("123456.789012"), now=now)
        account = LedgerAccount.objects.get(kind=LedgerAccount.Kind.CONSUMER, user=consumer)
        fees = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)

        for _ in range(200):
            ledger_transfer(debit=account, credit=fees, amount=Decimal("0.000007"), kind="FEE", now=now)

        account.refresh_from_db()
        assert account.balance == Decimal("123456.789012") - 200 * Decimal("0.000007")
        assert ledger_is_balanced()

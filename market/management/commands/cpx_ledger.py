"""`cpx_ledger deposit --user NAME --amount 100.00 [--reference REF]` credits a consumer;
`cpx_ledger balance --user NAME` shows balances; `cpx_ledger check` verifies double entry."""

import argparse
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from config.errors import DomainError
from market.models import User
from market.selectors import balance_get, ledger_is_balanced
from market.services.ledger import ledger_deposit


def _amount(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not amount.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite amount: {text!r}")
    return amount


class Command(BaseCommand):
    help = "Operator ledger actions: deposits, balances, the double-entry check."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        deposit = sub.add_parser("deposit", help="credit a consumer's balance from outside")
        deposit.add_argument("--user", required=True)
        deposit.add_argument("--amount", required=True, type=_amount)
        deposit.add_argument("--reference", default=None, help="idempotency reference: repeat-safe")
        deposit.add_argument("--memo", default="")
        balance = sub.add_parser("balance", help="a user's available, held and earned money")
        balance.add_argument("--user", required=True)
        sub.add_parser("check", help="exit 1 unless every balance matches its transfers and all sum to 0")

    def handle(self, *args, action, **options):
        if action == "check":
            if not ledger_is_balanced():
                raise CommandError("the ledger does NOT balance")
            self.stdout.write("ledger balanced")
            return
        user = User.objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user named {options['user']!r}")
        if action == "balance":
            for name, value in balance_get(user=user).items():
                self.stdout.write(f"{name:15} {value}")
            return
        try:
            transfer = ledger_deposit(
                user=user,
                amount=options["amount"],
                now=timezone.now(),
                reference=f"deposit:{options['reference']}" if options["reference"] else None,
                memo=options["memo"] or "deposit from cpx_ledger",
            )
        except DomainError as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        self.stdout.write(f"deposited {transfer.amount} to {user.username} (transfer {transfer.pk})")

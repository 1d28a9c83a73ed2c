"""The double-entry ledger: balanced transfers between accounts, escrow holds, deposits."""

from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Round

from config.errors import Conflict, DomainError, InvalidInput
from market.models import JobRequest, LedgerAccount, LedgerTransfer, User
from market.money import DECIMAL_PLACES, MAX_AMOUNT, to_money


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    status = 409


HOUSE_KINDS = (LedgerAccount.Kind.PLATFORM_FEE, LedgerAccount.Kind.PENALTY, LedgerAccount.Kind.EXTERNAL)


def ledger_account_for_user(*, user: User, kind: str) -> LedgerAccount:
    """The user's CONSUMER or PROVIDER account, created on first use."""
    account, _ = LedgerAccount.objects.get_or_create(kind=kind, user=user)
    return account


def ledger_house_account(*, kind: str) -> LedgerAccount:
    """The single platform-fee, penalty or external account, created on first use."""
    if kind not in HOUSE_KINDS:
        raise ValueError(f"{kind} is not a house account")
    try:
        with transaction.atomic():
            account, _ = LedgerAccount.objects.get_or_create(kind=kind, user=None, job=None)
    except IntegrityError:  # created by a concurrent caller between our get and our insert
        account = LedgerAccount.objects.get(kind=kind, user=None, job=None)
    return account


def ledger_transfer(
    *,
    debit: LedgerAccount,
    credit: LedgerAccount,
    amount: Decimal,
    kind: str,
    now: datetime,
    job: JobRequest | None = None,
    reference: str | None = None,
    memo: str = "",
) -> LedgerTransfer:
    """Move `amount` from `debit` to `credit` as one balanced transfer.

    The debit is a conditional UPDATE (balance >= amount), so two racing transfers can never
    overdraw an account, whatever the isolation level. Raises InsufficientFunds, InvalidInput.
    """
    args = dict(debit=debit, credit=credit, amount=amount, kind=kind, now=now, job=job, reference=reference)
    # Inside a caller's transaction, no savepoint of our own (two round trips on the hot path):
    # both refusals come before anything is written, so the caller's transaction stays usable.
    if transaction.get_connection().in_atomic_block:
        return _transfer(**args, memo=memo)
    with transaction.atomic():
        return _transfer(**args, memo=memo)


def _exact(expression):
    """Balance arithmetic rounded to the money quantum in SQL. PostgreSQL's numeric is exact and
    this is a no-op there; SQLite computes decimals in binary floating point, where
    0.3 - 0.1 - 0.1 < 0.1 would refuse an exact debit. Rounding every stored result keeps each
    balance the double nearest its exact decimal, so comparisons agree with exact arithmetic."""
    return Round(expression, DECIMAL_PLACES)


def _transfer(*, debit, credit, amount, kind, now, job, reference, memo) -> LedgerTransfer:
    amount = to_money(amount)
    if amount <= 0:
        raise InvalidInput("A transfer moves a positive amount.", amount=str(amount))
    debited = LedgerAccount.objects.filter(pk=debit.pk)
    if debit.kind != LedgerAccount.Kind.EXTERNAL:
        debited = debited.filter(balance__gte=amount)
    if debited.update(balance=_exact(F("balance") - amount)) != 1:
        raise InsufficientFunds(
            "The account does not hold enough money for this.", account=debit.pk, needed=str(amount)
        )
    LedgerAccount.objects.filter(pk=credit.pk).update(balance=_exact(F("balance") + amount))
    return LedgerTransfer.objects.create(
        kind=kind,
        debit=debit,
        credit=credit,
        amount=amount,
        job=job,
        reference=reference,
        memo=memo,
        created_at=now,
    )


def ledger_deposit(
    *, user: User, amount: Decimal, now: datetime, reference: str | None = None, memo: str = ""
):
    """Credit a consumer's balance from outside (an operator's deposit, later an on-chain event).

    Idempotent by `reference`: the same reference returns the first transfer and credits once;
    the same reference with another user or amount is a Conflict.
    """
    amount = to_money(amount)
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidInput("A deposit is a positive amount within range.", amount=str(amount))
    if not user.holds_role(User.Role.CONSUMER):
        raise InvalidInput("Deposits go to consumers.", user=user.username)
    if reference:
        existing = LedgerTransfer.objects.filter(reference=reference).select_related("credit").first()
        if existing is not None:
            return _same_deposit_or_conflict(existing, user=user, amount=amount)
    external = ledger_house_account(kind=LedgerAccount.Kind.EXTERNAL)
    consumer = ledger_account_for_user(user=user, kind=LedgerAccount.Kind.CONSUMER)
    try:
        return ledger_transfer(
            debit=external,
            credit=consumer,
            amount=amount,
            kind=LedgerTransfer.Kind.DEPOSIT,
            now=now,
            reference=reference or None,
            memo=memo,
        )
    except IntegrityError:
        if not reference:
            raise
        existing = LedgerTransfer.objects.select_related("credit").get(reference=reference)
        return _same_deposit_or_conflict(existing, user=user, amount=amount)


def _same_deposit_or_conflict(existing: LedgerTransfer, *, user: User, amount: Decimal) -> LedgerTransfer:
    if (
        existing.kind != LedgerTransfer.Kind.DEPOSIT
        or existing.credit.user_id != user.pk
        or existing.amount != amount
    ):
        raise Conflict("This reference was already used for another transfer.", reference=existing.reference)
    return existing

"""Spot-check verification of batch leases: did the provider run the model it was paid for?

Rule (stated, and what the README repeats):
- Selection: when a batch lease completes, it is checked with probability CPX_VERIFY_FRACTION,
  decided by HMAC(SECRET_KEY, lease id) so a provider cannot predict it. Eligible requests are the
  lease's successful ones that asked for greedy decoding (`temperature: 0`); k = CPX_VERIFY_SAMPLE
  of them are drawn with a generator seeded by the same HMAC. A lease with none is not checked.
- Re-run: a different provider whose agent says it serves the job's model takes the check
  (`GET /agent/verifications?models=…`), re-runs the k requests at temperature 0 and returns the
  answers; it is paid CPX_VERIFICATION_FEE per request from the platform's fee account (as much as
  that account holds).
- Comparison: exact match of the generated text (`choices[0].message.content` for chat,
  `choices[0].text` for completions). Greedy decoding of the same weights is deterministic on one
  hardware class; where kernels differ between classes a similarity threshold would be needed (not
  implemented: CPX compares exactly).
- A mismatch in any sampled request FAILS the lease: the provider loses CPX_VERIFY_REPUTATION_STEP
  of reputation and CPX_VERIFY_STAKE_SLASH_RATE of its stake, and the consumer is refunded the
  lease's charge (the provider's payment taken back from its earnings and the platform's share
  from the fee account, each as far as the account holds).

What it catches: a cheaper or different model answering in place of the one named, and fabricated
text, on the sampled greedy requests. What it does not: requests sampled at temperature > 0, a
provider cheating on only a few requests (caught with probability 1 − C(n−m, k)/C(n, k) for m of n
altered), and a verifier colluding with the provider it checks.
"""

import hashlib
import hmac
import json
import random
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest, Round

from auctions.models import BatchResult, Lease, Verification
from auctions.services.sla import lease_sla_quality
from config.errors import Conflict, InvalidInput, NotFound
from market.models import LedgerAccount, LedgerTransfer, Provider
from market.money import DECIMAL_PLACES, to_money
from market.services.files import batch_file_summary, file_read
from market.services.ledger import ledger_account_for_user, ledger_house_account, ledger_transfer

ZERO = Decimal("0")


class VerificationNotFound(NotFound):
    code = "verification_not_found"


class VerificationClosed(Conflict):
    code = "verification_closed"


def _draw(lease_id: int) -> tuple[float, random.Random]:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"verify:{lease_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, random.Random(digest)


def verification_sample(*, lease_id: int, eligible: list[str], k: int) -> list[str]:
    """The k custom_ids (of the sorted eligible ones) a check of this lease re-runs, sorted."""
    _, rng = _draw(lease_id)
    return sorted(rng.sample(sorted(eligible), min(k, len(eligible))))


def verification_maybe_open(*, lease: Lease, now: datetime) -> Verification | None:
    """Open a spot check of a completing batch lease if the draw selects it (see the module rule)."""
    fraction = settings.CPX_VERIFY_FRACTION
    draw, _ = _draw(lease.pk)
    if fraction <= 0 or draw >= fraction:
        return None
    summary = batch_file_summary(data_file=lease.job.input_file)
    greedy = {r.custom_id for r in summary.requests if r.greedy}
    eligible = sorted(
        custom_id
        for custom_id in BatchResult.objects.filter(
            lease=lease, status_code=200, error__isnull=True
        ).values_list("custom_id", flat=True)
        if custom_id in greedy
    )
    if not eligible:
        return None
    sample = verification_sample(lease_id=lease.pk, eligible=eligible, k=settings.CPX_VERIFY_SAMPLE)
    return Verification.objects.create(job=lease.job, lease=lease, custom_ids=sorted(sample), created_at=now)


@transaction.atomic
def verification_poll(*, provider: Provider, models: list[str], now: datetime) -> list[dict]:
    """Give the provider the pending checks of jobs naming one of `models` that another provider ran
    (at most 5), marked ASSIGNED to it; each with the requests to re-run at temperature 0."""
    if not models:
        return []
    pending = (
        Verification.objects.select_related("job", "job__input_file")
        .filter(status=Verification.Status.PENDING, job__model_name__in=models)
        .exclude(lease__provider=provider)
        .order_by("id")[:5]
    )
    handed = []
    for verification in pending:
        won = Verification.objects.filter(pk=verification.pk, status=Verification.Status.PENDING).update(
            status=Verification.Status.ASSIGNED, verifier=provider, assigned_at=now
        )
        if won:
            handed.append({"id": verification.pk, "requests": _requests(verification)})
    return handed


def _requests(verification: Verification) -> list[dict]:
    wanted = set(verification.custom_ids)
    lines = file_read(data_file=verification.job.input_file).splitlines()
    chosen = []
    for line in lines:
        item = json.loads(line)
        if item["custom_id"] in wanted:
            chosen.append({**item, "body": {**item["body"], "temperature": 0}})
    return chosen


def generated_text(body) -> str | None:
    """The text a chat or completion answer generated, or None if there is none."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(choice.get("message"), dict):
        return choice["message"].get("content")
    return choice.get("text")


@transaction.atomic
def verification_decide(
    *, provider: Provider, verification_id: int, results: list, now: datetime
) -> Verification:
    """Compare the verifier's answers with the lease's and apply the consequences (module rule).

    Raises VerificationNotFound (not assigned to this provider), VerificationClosed, InvalidInput
    (an answer missing for a sampled request).
    """
    verification = (
        Verification.objects.select_for_update(of=("self",))
        .select_related("lease", "lease__provider", "job", "job__consumer")
        .filter(pk=verification_id, verifier=provider)
        .first()
    )
    if verification is None:
        raise VerificationNotFound("No such verification.", verification=verification_id)
    if verification.status != Verification.Status.ASSIGNED:
        raise VerificationClosed("The verification is decided.", status=verification.status)
    answers = {}
    for item in results if isinstance(results, list) else []:
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            answers[item["custom_id"]] = generated_text((item.get("response") or {}).get("body"))
    missing = [c for c in verification.custom_ids if c not in answers]
    if missing:
        raise InvalidInput("Answer every sampled request.", missing=missing)
    originals = dict(
        BatchResult.objects.filter(job=verification.job, custom_id__in=verification.custom_ids).values_list(
            "custom_id", "body"
        )
    )
    mismatches = [
        c
        for c in verification.custom_ids
        if answers[c] is None or generated_text(originals.get(c)) != answers[c]
    ]
    verification.mismatches = mismatches
    verification.status = Verification.Status.FAILED if mismatches else Verification.Status.PASSED
    verification.decided_at = now
    # Lock order of the settlement module: the accounts of the verified provider before the consumer's.
    if mismatches:
        verification.refunded = _penalise_and_refund(verification, now=now)
    # The check's verified quality against the job's SLA terms (auctions.services.sla).
    lease_sla_quality(
        lease=verification.lease, checked=len(verification.custom_ids), mismatched=len(mismatches), now=now
    )
    _pay_verifier(verification, now=now)
    verification.save(update_fields=["mismatches", "status", "decided_at", "refunded"])
    return verification


def _take(
    *, debit: LedgerAccount, credit: LedgerAccount, wanted: Decimal, reference: str, job, now, memo
) -> Decimal:
    held = LedgerAccount.objects.select_for_update().get(pk=debit.pk).balance
    amount = to_money(min(wanted, held))
    if amount > 0:
        ledger_transfer(
            debit=debit,
            credit=credit,
            amount=amount,
            kind=LedgerTransfer.Kind.REFUND,
            now=now,
            job=job,
            reference=reference,
            memo=memo,
        )
    return max(amount, ZERO)


def _penalise_and_refund(verification: Verification, *, now: datetime) -> Decimal:
    lease, job = verification.lease, verification.job
    paid = dict(
        LedgerTransfer.objects.filter(
            reference__in=[f"lease:{lease.pk}:payment", f"lease:{lease.pk}:fee"]
        ).values_list("reference", "amount")
    )
    consumer = ledger_account_for_user(user=job.consumer, kind=LedgerAccount.Kind.CONSUMER)
    memo = f"lease {lease.pk} failed verification {verification.pk}"
    refunded = _take(
        debit=ledger_account_for_user(user=lease.provider.user, kind=LedgerAccount.Kind.PROVIDER),
        credit=consumer,
        wanted=paid.get(f"lease:{lease.pk}:payment", ZERO),
        reference=f"lease:{lease.pk}:verification:provider",
        job=job,
        now=now,
        memo=memo,
    )
    refunded += _take(
        debit=ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE),
        credit=consumer,
        wanted=paid.get(f"lease:{lease.pk}:fee", ZERO),
        reference=f"lease:{lease.pk}:verification:platform",
        job=job,
        now=now,
        memo=memo,
    )
    Provider.objects.filter(pk=lease.provider_id).update(
        reputation=Greatest(Value(ZERO), F("reputation") - settings.CPX_VERIFY_REPUTATION_STEP),
        stake=Round(F("stake") * (1 - settings.CPX_VERIFY_STAKE_SLASH_RATE), DECIMAL_PLACES),
    )
    Lease.objects.filter(pk=lease.pk).update(
        close_reason=Lease.CloseReason.VERIFICATION_FAILED,
        close_detail=f"failed verification {verification.pk}"[:300],
    )
    return refunded


def _pay_verifier(verification: Verification, *, now: datetime) -> None:
    fee = to_money(settings.CPX_VERIFICATION_FEE * len(verification.custom_ids))
    platform = ledger_house_account(kind=LedgerAccount.Kind.PLATFORM_FEE)
    held = LedgerAccount.objects.select_for_update().get(pk=platform.pk).balance
    amount = to_money(min(fee, held))
    if amount > 0:
        ledger_transfer(
            debit=platform,
            credit=ledger_account_for_user(user=verification.verifier.user, kind=LedgerAccount.Kind.PROVIDER),
            amount=amount,
            kind=LedgerTransfer.Kind.PAYMENT,
            now=now,
            job=verification.job,
            reference=f"verification:{verification.pk}:payment",
            memo=f"verification {verification.pk} of lease {verification.lease_id}",
        )

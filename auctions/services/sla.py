"""SLA terms that bite: each job's own contract, copied to its leases, measured, and settled.

The contract (docs/sla.md; the SLA contract model of the seed survey, section IV.B.3): a job states
a latency bound (p95 RTT in ms), a completion deadline, a minimum verified quality, and a penalty
rate per kind of breach (a share of the lease's charge; unset rates are CPX_SLA_PENALTY_RATE). A job
that states nothing still carries terms: its `latency_sla_ms` and `deadline`. The round copies the
terms to each lease it writes (`LeaseSla.terms`), and the provider's agent sees them in its offer
before it accepts.

Measurement: CPX probes each agent's round-trip time on the agent channel. Every heartbeat answer
carries a probe token (the send time, HMAC-signed with SECRET_KEY, so it cannot be forged or moved);
the agent echoes it at once (`POST /agent/probes`) and CPX records now − send time as one RTT
sample on each RUNNING lease of that provider. p50 and p95 are kept per lease.

Settlement: when a lease completes, its breaches (auctions.mechanisms.sla.breaches) are found from
the samples and the completion time; when its spot check is decided, the quality breach from the
check. Each breach costs rate × charge (the sum capped at the charge), moved from the provider's
earnings to the consumer (capped at what the earnings hold), once: references `lease:<id>:sla` and
`lease:<id>:sla:quality` are unique in the ledger. The lease's close reason becomes SLA_BREACH, and
the provider loses CPX_SLA_REPUTATION_STEP of reputation per breach; at zero it is SUSPENDED (out of
the book until an operator restores it).
"""

import hashlib
import hmac
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.dispatch import receiver
from django.utils.dateparse import parse_datetime

from auctions.mechanisms import sla as engine
from auctions.models import JobTerms, Lease, LeaseSla
from config.errors import Conflict, InvalidInput, NotFound
from market.models import JobRequest, LedgerAccount, LedgerTransfer, Provider
from market.money import to_money
from market.services.jobs import job_request_submitted
from market.services.ledger import ledger_account_for_user, ledger_transfer

ZERO = Decimal("0")
RATE_KINDS = ("latency", "deadline", "quality")
TERM_FIELDS = ("latency_p95_ms", "complete_by", "min_quality", *(f"{k}_penalty_rate" for k in RATE_KINDS))
MAX_LATENCY_MS = 600_000
MAX_RATE = Decimal("10")
KEPT_SAMPLES = 200
OPEN_STATUSES = (JobRequest.Status.SUBMITTED, JobRequest.Status.QUEUED)


class SlaTermsInvalid(InvalidInput):
    code = "sla_terms_invalid"


class SlaTermUnknown(InvalidInput):
    code = "sla_term_unknown"


class SlaLatencyInvalid(InvalidInput):
    code = "sla_latency_invalid"


class SlaDeadlineInvalid(InvalidInput):
    code = "sla_deadline_invalid"


class SlaQualityInvalid(InvalidInput):
    code = "sla_quality_invalid"


class SlaRateInvalid(InvalidInput):
    code = "sla_rate_invalid"


class SlaTermsLocked(Conflict):
    """The job was matched already: its leases carry the terms it had then."""

    code = "sla_terms_locked"


class ProbeInvalid(InvalidInput):
    code = "probe_invalid"


class ProbeExpired(Conflict):
    code = "probe_expired"


def _decimal(value, *, field: str, error: type[InvalidInput], low: Decimal, high: Decimal) -> Decimal:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise TypeError
        number = Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        raise error(f"{field} is a number from {low} to {high}.", field=field) from None
    if not number.is_finite() or not low <= number <= high:
        raise error(f"{field} is a number from {low} to {high}.", field=field)
    return number.quantize(Decimal("0.0001"))


def sla_terms_validate(*, data, job_deadline: datetime, now: datetime) -> dict:
    """The terms in `data`, checked and normalised ({field: value or None}).

    Raises SlaTermsInvalid (not an object), SlaTermUnknown, SlaLatencyInvalid, SlaDeadlineInvalid
    (not a time, past, or after the job's deadline), SlaQualityInvalid, SlaRateInvalid."""
    if not isinstance(data, dict):
        raise SlaTermsInvalid("The terms are a JSON object.")
    unknown = sorted(set(data) - set(TERM_FIELDS))
    if unknown:
        raise SlaTermUnknown(
            f"Unknown term {unknown[0]!r}; terms are {', '.join(TERM_FIELDS)}.", field=unknown[0]
        )
    terms: dict = dict.fromkeys(TERM_FIELDS)
    latency = data.get("latency_p95_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, int) or not 1 <= latency <= MAX_LATENCY_MS:
            raise SlaLatencyInvalid(
                f"latency_p95_ms is a whole number of ms from 1 to {MAX_LATENCY_MS}.", field="latency_p95_ms"
            )
        terms["latency_p95_ms"] = latency
    complete_by = data.get("complete_by")
    if complete_by is not None:
        parsed = parse_datetime(complete_by) if isinstance(complete_by, str) else None
        if parsed is None or parsed.tzinfo is None:
            raise SlaDeadlineInvalid("complete_by is an ISO 8601 time with its offset.", field="complete_by")
        if parsed <= now or parsed > job_deadline:
            raise SlaDeadlineInvalid(
                "complete_by is in the future and no later than the job's deadline.",
                field="complete_by",
                deadline=job_deadline.isoformat(),
            )
        terms["complete_by"] = parsed
    if data.get("min_quality") is not None:
        terms["min_quality"] = _decimal(
            data["min_quality"], field="min_quality", error=SlaQualityInvalid, low=ZERO, high=Decimal(1)
        )
    for kind in RATE_KINDS:
        name = f"{kind}_penalty_rate"
        if data.get(name) is not None:
            terms[name] = _decimal(data[name], field=name, error=SlaRateInvalid, low=ZERO, high=MAX_RATE)
    return terms


@transaction.atomic
def job_terms_set(*, consumer, job_id: int, data, now: datetime) -> JobTerms:
    """State (or restate) the SLA terms of the consumer's job before it is matched.

    Raises NotFound, SlaTermsLocked, and the validation errors of `sla_terms_validate`."""
    job = JobRequest.objects.select_for_update().filter(pk=job_id, consumer=consumer).first()
    if job is None:
        raise NotFound("No such job.", job=job_id)
    if job.status not in OPEN_STATUSES:
        raise SlaTermsLocked("The job was matched already; its terms are fixed.", status=job.status)
    terms = sla_terms_validate(data=data, job_deadline=job.deadline, now=now)
    row, _ = JobTerms.objects.update_or_create(job=job, defaults={**terms, "created_at": now})
    return row


@receiver(job_request_submitted, dispatch_uid="sla-terms-at-submission")
def _terms_at_submission(sender, *, job: JobRequest, sla, now: datetime, **kwargs) -> None:
    """The terms stated with the job's submission (`sla`), checked and recorded in its transaction."""
    if sla is not None:
        terms = sla_terms_validate(data=sla, job_deadline=job.deadline, now=now)
        JobTerms.objects.create(job=job, **terms, created_at=now)


def sla_terms_of(job: "JobRequest | dict", stated: JobTerms | None) -> dict:
    """The job's contract as JSON: its stated terms, else its latency SLA and deadline, with every
    penalty rate resolved (unset: CPX_SLA_PENALTY_RATE) so a lease's copy is fixed at the round."""
    default_rate = str(settings.CPX_SLA_PENALTY_RATE)
    if isinstance(job, dict):  # a round's book row
        job_latency, job_deadline = job.get("latency_sla_ms"), job.get("deadline")
    else:
        job_latency, job_deadline = job.latency_sla_ms, job.deadline
    latency = stated.latency_p95_ms if stated and stated.latency_p95_ms else job_latency
    complete_by = stated.complete_by if stated and stated.complete_by else job_deadline
    quality = stated.min_quality if stated else None
    terms = {
        "latency_p95_ms": latency,
        "complete_by": complete_by.isoformat() if complete_by else None,
        "min_quality": None if quality is None else str(quality),
        "stated": stated is not None,
    }
    for kind in RATE_KINDS:
        rate = getattr(stated, f"{kind}_penalty_rate", None) if stated else None
        terms[f"{kind}_penalty_rate"] = default_rate if rate is None else str(rate)
    return terms


def lease_sla_copy(*, leases: list[Lease], jobs: dict | None = None) -> None:
    """Copy each new lease's job terms to it: one query for the stated terms, one insert (and one
    for the jobs' latency SLA and deadline unless `jobs` gives them: {id: row or dict})."""
    if not leases:
        return
    job_ids = [lease.job_id for lease in leases]
    stated = {t.job_id: t for t in JobTerms.objects.filter(job_id__in=job_ids)}
    if jobs is None:
        jobs = JobRequest.objects.only("latency_sla_ms", "deadline").in_bulk(job_ids)
    LeaseSla.objects.bulk_create(
        [
            LeaseSla(lease_id=lease.pk, terms=sla_terms_of(jobs[lease.job_id], stated.get(lease.job_id)))
            for lease in leases
        ],
        ignore_conflicts=True,
    )


# --- probes


def _sign(provider_id: int, sent_us: int) -> str:
    message = f"probe:{provider_id}:{sent_us}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def probe_issue(*, provider: Provider, now: datetime) -> str:
    """A probe token for the provider's agent to echo at once: `<sent µs>.<signature>`."""
    sent = _micros(now)
    return f"{sent}.{_sign(provider.pk, sent)}"


@transaction.atomic
def probe_record(*, provider: Provider, token, now: datetime) -> dict:
    """Record the echo of a probe: RTT = now − send time, one sample on each of the provider's
    RUNNING leases that has not counted a newer probe. Returns {"rtt_ms", "leases"}.

    Raises ProbeInvalid (malformed, forged or another provider's), ProbeExpired (older than
    CPX_SLA_PROBE_MAX_AGE_S, or from the future)."""
    sent_text, _, signature = str(token or "").partition(".")
    if not sent_text.isdigit() or len(sent_text) > 20:
        raise ProbeInvalid("Echo the probe token exactly as the heartbeat gave it.", field="token")
    sent = int(sent_text)
    if not hmac.compare_digest(signature, _sign(provider.pk, sent)):
        raise ProbeInvalid("Echo the probe token exactly as the heartbeat gave it.", field="token")
    rtt_ms = (_micros(now) - sent) / 1000
    if rtt_ms < 0 or rtt_ms > settings.CPX_SLA_PROBE_MAX_AGE_S * 1000:
        raise ProbeExpired("The probe is too old; echo the newest one at once.", rtt_ms=rtt_ms)
    # Only the SLA rows are locked (not the joined leases): a completion holds its lease and then
    # takes its SLA row, so locking leases here could close a cycle.
    rows = list(
        LeaseSla.objects.select_for_update(of=("self",))
        .filter(lease__provider=provider, lease__status=Lease.Status.RUNNING, last_probe_us__lt=sent)
        .order_by("lease_id")
    )
    for row in rows:
        samples = ([*row.rtt_ms, round(rtt_ms, 3)])[-KEPT_SAMPLES:]
        row.rtt_ms = samples
        row.probes += 1
        row.last_probe_us = sent
        row.p50_ms = engine.percentile(samples, 50)
        row.p95_ms = engine.percentile(samples, 95)
        row.save(update_fields=["rtt_ms", "probes", "last_probe_us", "p50_ms", "p95_ms"])
    return {"rtt_ms": rtt_ms, "leases": [row.lease_id for row in rows]}


# --- settlement


def _charge(lease: Lease) -> Decimal:
    """What the lease's settlement took out of the job's escrow (payment, fee, any broker's fee)."""
    paid = LedgerTransfer.objects.filter(
        debit__kind=LedgerAccount.Kind.ESCROW,
        debit__job_id=lease.job_id,
        reference__startswith=f"lease:{lease.pk}:",
    ).values_list("amount", flat=True)
    return sum(paid, ZERO)


def _late_by_s(terms: dict, ended_at: datetime | None) -> float | None:
    complete_by = parse_datetime(terms["complete_by"]) if terms.get("complete_by") else None
    if complete_by is None or ended_at is None:
        return None
    return (ended_at - complete_by).total_seconds()


def _apply(lease: Lease, row: LeaseSla, found: list, *, reference: str, now: datetime) -> Decimal:
    """Charge the breaches: provider earnings → consumer, capped at the charge and at the earnings;
    reputation down one step per breach. Once per reference."""
    if not found or LedgerTransfer.objects.filter(reference=reference).exists():
        return ZERO
    charge = _charge(lease)
    due = to_money(min(charge, charge * sum(Decimal(str(b.rate)) for b in found)))
    account = ledger_account_for_user(user=lease.provider.user, kind=LedgerAccount.Kind.PROVIDER)
    held = LedgerAccount.objects.select_for_update().get(pk=account.pk).balance
    taken = max(ZERO, min(due, held))
    if taken > 0:
        ledger_transfer(
            debit=account,
            credit=ledger_account_for_user(user=lease.job.consumer, kind=LedgerAccount.Kind.CONSUMER),
            amount=taken,
            kind=LedgerTransfer.Kind.PENALTY,
            now=now,
            job=lease.job,
            reference=reference,
            memo=f"SLA breach, lease {lease.pk}: {', '.join(b.kind for b in found)}"[:200],
        )
    step = settings.CPX_SLA_REPUTATION_STEP * len(found)
    Provider.objects.filter(pk=lease.provider_id).update(
        reputation=Greatest(Value(ZERO), F("reputation") - step)
    )
    Provider.objects.filter(pk=lease.provider_id, reputation__lte=0, status=Provider.Status.ACTIVE).update(
        status=Provider.Status.SUSPENDED
    )
    row.breaches = [
        *row.breaches,
        *({"kind": b.kind, "measured": b.measured, "bound": b.bound, "rate": b.rate} for b in found),
    ]
    row.penalty = row.penalty + taken
    return taken


def _row(lease: Lease) -> LeaseSla:
    row = LeaseSla.objects.select_for_update().filter(lease=lease).first()
    if row is None:  # a lease written before SLA terms existed: its job's terms as they are now
        stated = JobTerms.objects.filter(job_id=lease.job_id).first()
        row = LeaseSla.objects.create(lease=lease, terms=sla_terms_of(lease.job, stated))
    return row


def lease_sla_settle(*, lease: Lease, now: datetime) -> list[dict]:
    """Find a COMPLETED lease's latency and deadline breaches and charge them (module rule);
    returns the breaches found. Idempotent. Called inside the completion's transaction, which
    holds the job, the lease and the provider row (the lock order of auctions.services.leases)."""
    row = _row(lease)
    found = engine.breaches(
        terms=row.terms,
        rtt_ms=row.rtt_ms,
        late_by_s=_late_by_s(row.terms, lease.ended_at),
        quality=None,
        default_rate=float(settings.CPX_SLA_PENALTY_RATE),
    )
    _apply(lease, row, found, reference=f"lease:{lease.pk}:sla", now=now)
    row.save(update_fields=["breaches", "penalty"])
    if found:
        detail = "; ".join(f"{b.kind} {b.measured:g} vs {b.bound:g}" for b in found)
        Lease.objects.filter(pk=lease.pk, status=Lease.Status.COMPLETED).update(
            close_reason=Lease.CloseReason.SLA_BREACH, close_detail=f"SLA breach: {detail}"[:300]
        )
    return [b.__dict__ for b in found]


def lease_sla_quality(*, lease: Lease, checked: int, mismatched: int, now: datetime) -> list[dict]:
    """Record a decided spot check's verified quality (matches / checked) on the lease and charge a
    quality breach of its terms. Called inside verification_decide's transaction."""
    row = _row(lease)
    quality = Decimal(checked - mismatched) / Decimal(checked) if checked else None
    row.quality = None if quality is None else quality.quantize(Decimal("0.0001"))
    found = engine.breaches(
        terms={k: v for k, v in row.terms.items() if k.startswith(("min_quality", "quality"))},
        rtt_ms=[],
        late_by_s=None,
        quality=None if quality is None else float(quality),
        default_rate=float(settings.CPX_SLA_PENALTY_RATE),
    )
    _apply(lease, row, found, reference=f"lease:{lease.pk}:sla:quality", now=now)
    row.save(update_fields=["quality", "breaches", "penalty"])
    return [b.__dict__ for b in found]

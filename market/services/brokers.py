"""Brokers (MECM's middle tier): appointments made and revoked by consent, and a broker acting for
its principals — submitting a consumer principal's jobs, pricing a provider principal's listings.

A broker may act only for a principal whose appointment on that side is ACTIVE; every refusal is a
DomainError with a stable code. Fees are charged at settlement (auctions.services.broker_fees).
"""

from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction

from config.errors import Conflict, DomainError, InvalidInput, NotFound
from market.models import BrokerAppointment, BrokeredJob, JobRequest, Provider, Resource, Role, User
from market.services.jobs import IdempotencyKeyReused, job_request_submit
from market.services.providers import resource_update

# A broker's fee is a share of the trade it makes: below one half, so a principal always keeps
# most of its side of the trade (a policy of CPX, not of the MECM paper, which leaves it to the market).
MAX_FEE_RATE = Decimal("0.5")
FEE_RATE_QUANTUM = Decimal("0.000001")
SIDE_OF_ROLE = {
    Role.PROVIDER: BrokerAppointment.Side.PROVIDER,
    Role.CONSUMER: BrokerAppointment.Side.CONSUMER,
}


class BrokerNotFound(NotFound):
    code = "broker_not_found"


class BrokerPrincipalRole(InvalidInput):
    code = "broker_principal_role"


class BrokerFeeRateInvalid(InvalidInput):
    code = "broker_fee_rate_invalid"


class BrokerAlreadyAppointed(Conflict):
    code = "broker_already_appointed"


class BrokerAppointmentRevoked(Conflict):
    code = "broker_appointment_revoked"


class BrokerAppointmentNotFound(NotFound):
    code = "broker_appointment_not_found"


class BrokerNotAppointed(DomainError):
    """The broker holds no active appointment from this principal on this side."""

    code = "broker_not_appointed"
    status = 403


def _fee_rate(value) -> Decimal:
    try:
        rate = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BrokerFeeRateInvalid("The fee rate is a decimal number.", field="fee_rate") from None
    if not rate.is_finite() or rate < 0 or rate > MAX_FEE_RATE or rate != rate.quantize(FEE_RATE_QUANTUM):
        raise BrokerFeeRateInvalid(
            f"The fee rate is between 0 and {MAX_FEE_RATE}, to 6 decimal places.",
            field="fee_rate",
            maximum=str(MAX_FEE_RATE),
        )
    return rate


@transaction.atomic
def broker_appoint(*, principal: User, broker_username: str, fee_rate, now: datetime) -> BrokerAppointment:
    """A provider or consumer appoints a broker to trade its side at `fee_rate`. Raises
    BrokerPrincipalRole, BrokerNotFound (no such broker), BrokerFeeRateInvalid,
    BrokerAlreadyAppointed (one active broker per side: revoke the first)."""
    side = SIDE_OF_ROLE.get(principal.role)
    if side is None:
        raise BrokerPrincipalRole("Only providers and consumers appoint brokers.", role=principal.role)
    rate = _fee_rate(fee_rate)
    broker = User.objects.filter(username=broker_username, role=Role.BROKER, is_active=True).first()
    if broker is None:
        raise BrokerNotFound("No broker by that name.", field="broker", broker=broker_username)
    try:
        with transaction.atomic():
            return BrokerAppointment.objects.create(
                broker=broker, principal=principal, side=side, fee_rate=rate, created_at=now
            )
    except IntegrityError:
        raise BrokerAlreadyAppointed(
            "A broker already trades for you on this side: revoke that appointment first.",
            field="broker",
            side=side,
        ) from None


def broker_revoke(*, appointment_id: int, by: User, now: datetime) -> BrokerAppointment:
    """Either party ends an appointment (compare-and-set: ACTIVE → REVOKED). Jobs the broker already
    placed keep their fee; nothing new can be done under it. Raises BrokerAppointmentNotFound (also
    for a third party's), BrokerAppointmentRevoked."""
    mine = BrokerAppointment.objects.filter(pk=appointment_id, broker=by) | BrokerAppointment.objects.filter(
        pk=appointment_id, principal=by
    )
    appointment = mine.first()
    if appointment is None:
        raise BrokerAppointmentNotFound("No such appointment.", appointment=appointment_id)
    won = BrokerAppointment.objects.filter(pk=appointment.pk, status=BrokerAppointment.Status.ACTIVE).update(
        status=BrokerAppointment.Status.REVOKED, revoked_at=now, revoked_by=by
    )
    if won != 1:
        raise BrokerAppointmentRevoked("This appointment is already revoked.", appointment=appointment.pk)
    appointment.refresh_from_db()
    return appointment


def broker_appointment_active(*, broker: User, principal_username: str, side: str) -> BrokerAppointment:
    """The broker's active appointment from this principal on this side. Raises BrokerNotAppointed
    (also for an unknown principal: a broker learns nothing of users who did not appoint it)."""
    appointment = (
        BrokerAppointment.objects.select_related("principal")
        .filter(
            broker=broker,
            principal__username=principal_username,
            side=side,
            status=BrokerAppointment.Status.ACTIVE,
        )
        .first()
    )
    if appointment is None:
        raise BrokerNotAppointed(
            "You hold no active appointment from this principal.", principal=principal_username, side=side
        )
    return appointment


@transaction.atomic
def broker_job_submit(
    *, broker: User, principal_username: str, spec: dict, now: datetime, idempotency_key: str | None = None
) -> tuple[JobRequest, bool]:
    """Submit a job for a consumer principal: sized and held in escrow from the principal's balance
        like its own, and recorded as brokered under the appointment (whose rate is charged at
        settlement). A retry with the same key answers the same job; a key the principal used for its own
    job is IdempotencyKeyReused. Raises BrokerNotAppointed, and what job_request_submit raises."""
    appointment = broker_appointment_active(
        broker=broker, principal_username=principal_username, side=BrokerAppointment.Side.CONSUMER
    )
    job, created = job_request_submit(
        consumer=appointment.principal, spec=spec, now=now, idempotency_key=idempotency_key
    )
    if created:
        BrokeredJob.objects.create(job=job, appointment=appointment)
    elif not BrokeredJob.objects.filter(job=job, appointment__broker=broker).exists():
        # The principal's own job under the same key: a broker never takes over a job it did not place.
        raise IdempotencyKeyReused("This Idempotency-Key was used for a job you did not place.", job=job.pk)
    return job, created


def broker_resource_update(*, broker: User, principal_username: str, resource_id: int, **fields) -> Resource:
    """Change a provider principal's listing for it (its asks, floor, availability). Raises
    BrokerNotAppointed, and what resource_update raises (NotFound for another provider's listing)."""
    appointment = broker_appointment_active(
        broker=broker, principal_username=principal_username, side=BrokerAppointment.Side.PROVIDER
    )
    provider = Provider.objects.filter(user=appointment.principal).first()
    if provider is None:
        raise NotFound("The principal has no provider profile.", principal=principal_username)
    return resource_update(provider=provider, resource_id=resource_id, **fields)

"""Who reaches the market through a broker, read in the round's own book queries (no query of its
own): a scalar subquery per job and per listing (auctions.services.broker_books, docs/mecm.md)."""

from django.db.models import OuterRef, Subquery

from market.models import BrokerAppointment, BrokeredJob

ACTIVE = BrokerAppointment.Status.ACTIVE


def job_broker():
    """The user id of the broker a job was placed through, while that appointment is ACTIVE (or None)."""
    return Subquery(
        BrokeredJob.objects.filter(job=OuterRef("pk"), appointment__status=ACTIVE).values(
            "appointment__broker_id"
        )[:1]
    )


def resource_broker():
    """The user id of the listing's provider's ACTIVE provider-side broker (at most one), or None."""
    return Subquery(
        BrokerAppointment.objects.filter(
            principal=OuterRef("provider__user_id"), side=BrokerAppointment.Side.PROVIDER, status=ACTIVE
        ).values("broker_id")[:1]
    )

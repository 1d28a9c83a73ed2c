"""Reads of the market: explicit ordering, joins up front, one query per list."""

import hmac
from collections import defaultdict
from decimal import Decimal

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum

from market.models import (
    ApiKey,
    DataFile,
    JobRequest,
    LedgerAccount,
    LedgerTransfer,
    Provider,
    Resource,
    User,
)
from market.money import to_money
from market.services.accounts import api_key_digest
from market.services.placement import region_names


def api_key_authenticate(raw: str, *, related: tuple[str, ...] = ()) -> ApiKey | None:
    """The active key matching `raw` (`cpx_<prefix>_<secret>`), with its user (and the `related`
    objects of the key, fetched in the same query), or None. Constant-time on the secret."""
    return api_keys_authenticate([raw], related=related)[raw]


def api_keys_authenticate(raws: list[str], *, related: tuple[str, ...] = ()) -> dict[str, ApiKey | None]:
    """`api_key_authenticate` for several raw keys in one query: {raw: key or None}."""
    parsed = {}
    for raw in raws:
        scheme, prefix, secret = (raw.split("_", 2) + ["", ""])[:3]
        if scheme == "cpx" and prefix and secret and len(prefix) <= 16:
            parsed[raw] = (prefix, secret)
    keys: dict[str, ApiKey] = {}
    if parsed:
        active = ApiKey.objects.select_related("user", *related).filter(
            prefix__in={prefix for prefix, _ in parsed.values()}, revoked_at__isnull=True
        )
        keys = {key.prefix: key for key in active}  # prefixes are unique
    answers: dict[str, ApiKey | None] = {}
    for raw in raws:
        prefix, secret = parsed.get(raw, ("", ""))
        key = keys.get(prefix)
        valid = key is not None and key.user.is_active
        answers[raw] = key if valid and hmac.compare_digest(key.digest, api_key_digest(secret)) else None
    return answers


def provider_for_user(*, user: User) -> Provider | None:
    return Provider.objects.filter(user=user).first()


def provider_list() -> QuerySet[Provider]:
    return Provider.objects.select_related("user").order_by("id")


def resource_list(*, provider: Provider | None = None) -> QuerySet[Resource]:
    """Listings, a provider's own when given (retired ones included: they are history)."""
    resources = Resource.objects.select_related("provider").order_by("id")
    return resources.filter(provider=provider) if provider is not None else resources


SPENT_KINDS = (LedgerTransfer.Kind.PAYMENT, LedgerTransfer.Kind.FEE)


def job_request_list(*, consumer: User | None = None, with_outcome: bool = False) -> QuerySet[JobRequest]:
    """Jobs newest first, a consumer's own when given.

    `with_outcome` adds what the job cost and where it ran: `spent` (payments and fees charged
    from its escrow so far, one subquery) and its leases newest first with their provider and
    resource (`leases`, the reverse relation of auctions' Lease, prefetched in 3 queries per page
    whatever its length; market reads it by name and imports nothing of auctions)."""
    jobs = JobRequest.objects.select_related("consumer", "output_file", "error_file").order_by(
        "-created_at", "-id"
    )
    if consumer is not None:
        jobs = jobs.filter(consumer=consumer)
    if with_outcome:
        spent = (
            LedgerTransfer.objects.filter(job=OuterRef("pk"), kind__in=SPENT_KINDS)
            .order_by()
            .values("job")
            .annotate(total=Sum("amount"))
            .values("total")
        )
        jobs = jobs.annotate(spent=Subquery(spent)).prefetch_related("leases__provider", "leases__resource")
    return jobs


def job_ran_where(job: JobRequest) -> dict | None:
    """Where the job's latest lease placed it (region, site, provider, device), or None if it has
    not been matched; reads the leases `job_request_list(with_outcome=True)` prefetched."""
    leases = list(job.leases.all())
    if not leases:
        return None
    lease = max(leases, key=lambda lease: lease.pk)
    provider = lease.provider
    return {
        "region": provider.region,
        "site": provider.site,
        "provider": provider.display_name,
        "resource": lease.resource.model_name,
        "devices": lease.devices,
        "lease": lease.pk,
        "lease_status": lease.status,
    }


def file_list(*, owner: User) -> QuerySet[DataFile]:
    """The owner's files, newest first."""
    return DataFile.objects.filter(owner=owner).order_by("-created_at", "-id")


def balance_get(*, user: User) -> dict:
    """The user's available balance, what it holds in escrow, and its provider earnings."""
    own = dict(LedgerAccount.objects.filter(user=user).values_list("kind", "balance"))
    held = LedgerAccount.objects.filter(kind=LedgerAccount.Kind.ESCROW, job__consumer=user).aggregate(
        total=Sum("balance")
    )["total"]
    zero = Decimal("0")
    return {
        "available": own.get(LedgerAccount.Kind.CONSUMER, zero),
        "held_in_escrow": to_money(held or zero),  # SQLite sums decimals as floats
        "earnings": own.get(LedgerAccount.Kind.PROVIDER, zero),
    }


def ledger_transfer_list(*, user: User | None = None) -> QuerySet[LedgerTransfer]:
    """Transfers newest first; a user's own are those touching its accounts or its jobs' escrow."""
    # The accounts' users too: an account names its owner when listed.
    transfers = LedgerTransfer.objects.select_related("debit__user", "credit__user").order_by(
        "-created_at", "-id"
    )
    if user is None:
        return transfers
    mine = (
        Q(debit__user=user)
        | Q(credit__user=user)
        | Q(debit__job__consumer=user)
        | Q(credit__job__consumer=user)
    )
    return transfers.filter(mine)


def ledger_is_balanced() -> bool:
    """Double entry holds: every balance equals its credits minus its debits, and all sum to zero.

    Summed in Python with Decimal: SQLite's SUM over decimals goes through floats."""
    expected: dict[int, Decimal] = defaultdict(Decimal)
    for debit, credit, amount in LedgerTransfer.objects.values_list("debit", "credit", "amount").iterator():
        expected[debit] -= amount
        expected[credit] += amount
    total = Decimal(0)
    for pk, balance in LedgerAccount.objects.values_list("id", "balance").iterator():
        if balance != expected.get(pk, 0):
            return False
        total += balance
    return total == 0


def api_key_list(*, user: User) -> QuerySet[ApiKey]:
    """The user's API keys, newest first, revoked ones included (the list shows when they were)."""
    return ApiKey.objects.filter(user=user).order_by("-created_at", "-id")


def region_list() -> list[dict]:
    """The regions CPX knows (the latency model's map), each with its centroid and how many active
    providers list resources there, in ONE query."""
    from auctions.mechanisms.latency import REGION_CENTROIDS  # the map regions come from

    listed = dict(
        Provider.objects.filter(status=Provider.Status.ACTIVE, resources__status=Resource.Status.LISTED)
        .values_list("region")
        .annotate(n=Count("id", distinct=True))
    )
    return [
        {
            "name": name,
            "latitude": REGION_CENTROIDS[name][0],
            "longitude": REGION_CENTROIDS[name][1],
            "providers": listed.get(name, 0),
        }
        for name in region_names()
    ]

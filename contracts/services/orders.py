"""EIP-712 order intake: a consumer who settles on chain signs one order per job (contracts.orders);
`settlement_order_draft` gives it the typed data to sign, `settlement_order_submit` verifies the
signature (eth-account) and the order's fields and stores it, `settlement_path` says which path a job
settles on: "on-chain" (signed order), "awaiting-order" (the consumer has a wallet, the job no order yet)
or "ledger" (no wallet: the off-chain ledger alone).

The order's fields are the server's, not the client's: job hash of the job's id and spec, the job's
budget in wei as its maximum, the wallet's next nonce and running cumulative maximum, a deadline
CPX_ORDER_TTL_S ahead. The client signs them and sends them back with the signature; a field that
differs from the draft is refused, so an order can only ever be the one the consumer saw."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef

from auctions.models import Lease
from config.errors import Conflict, InvalidInput, NotFound
from contracts.client import SettlementClient, SettlementV2Client
from contracts.models import ConsumerWallet, SettlementOrder
from contracts.orders import InvalidOrder, Order, job_hash, typed_data, verify_order
from contracts.services import deployment as deployments
from contracts.services.deployment import deployment_for
from contracts.services.money import to_wei
from market.models import JobRequest, User

PATH_ON_CHAIN = "on-chain"
PATH_AWAITING = "awaiting-order"
PATH_LEDGER = "ledger"


class OrderRefused(InvalidInput):
    code = "settlement_order_invalid"


class OrderExists(Conflict):
    code = "settlement_order_exists"


def _job_spec(job: JobRequest) -> str:
    return f"{job.kind}|{job.model_name}|{job.budget}|{job.deadline.isoformat()}"


def _consumer_job(user: User, job_id: int) -> JobRequest:
    job = JobRequest.objects.filter(pk=job_id, consumer=user).first()
    if job is None:
        raise NotFound("No such job of yours.", job=job_id)
    return job


def settlement_path(job: JobRequest) -> str:
    """Which path the job settles on (see the module docstring), in one query (the job pages show it)."""
    row = (
        JobRequest.objects.filter(pk=job.pk)
        .annotate(
            has_order=Exists(SettlementOrder.objects.filter(job_id=OuterRef("pk"))),
            has_wallet=Exists(ConsumerWallet.objects.filter(user_id=OuterRef("consumer_id"))),
        )
        .values("has_order", "has_wallet")
        .first()
    ) or {"has_order": False, "has_wallet": False}
    if row["has_order"]:
        return PATH_ON_CHAIN
    return PATH_AWAITING if row["has_wallet"] else PATH_LEDGER


def _draft(job: JobRequest, wallet: ConsumerWallet, deployment, now: datetime) -> Order:
    previous = SettlementOrder.objects.filter(
        deployment=deployment, consumer_address=wallet.address
    ).aggregate(nonce=Max("nonce"), cumulative=Max("cumulative_max_wei"))
    maximum = to_wei(job.budget)
    if maximum <= 0:
        raise OrderRefused("A job without a budget has nothing to sign for.", job=job.pk)
    return Order(
        consumer=wallet.address,
        job_hash=job_hash(job.pk, _job_spec(job)),
        max_amount_wei=maximum,
        cumulative_max_wei=int(previous["cumulative"] or 0) + maximum,
        nonce=int(previous["nonce"] or 0) + 1,
        deadline=int(now.timestamp()) + settings.CPX_ORDER_TTL_S,
    )


def settlement_order_draft(
    *, user: User, job_id: int, now: datetime, client: SettlementClient | None = None
) -> dict:
    """The typed data the consumer signs for this job (eth_signTypedData_v4), and the job's path."""
    job = _consumer_job(user, job_id)
    existing = SettlementOrder.objects.filter(job=job).first()
    if existing is not None:
        return {"job": job.pk, "path": PATH_ON_CHAIN, "order": order_document(existing)}
    wallet = ConsumerWallet.objects.filter(user=user).first()
    if wallet is None:
        return {"job": job.pk, "path": PATH_LEDGER, "typed_data": None}
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    order = _draft(job, wallet, deployment, now)
    payload = typed_data(order, chain_id=client.chain_id(), contract=deployment.address)
    payload["message"]["jobHash"] = order.job_hash  # JSON: hex, not bytes
    return {"job": job.pk, "path": PATH_AWAITING, "typed_data": _jsonable(payload)}


def settlement_order_submit(
    *,
    user: User,
    job_id: int,
    nonce: int,
    deadline: int,
    max_amount_wei: int,
    cumulative_max_wei: int,
    signature: str,
    now: datetime,
    client: SettlementClient | None = None,
) -> SettlementOrder:
    """Verify and store the consumer's signed order for the job. Raises NotFound, OrderRefused (not the
    draft's fields, not signed by the wallet, expired), OrderExists (the job already has one)."""
    job = _consumer_job(user, job_id)
    wallet = ConsumerWallet.objects.filter(user=user).first()
    if wallet is None:
        raise OrderRefused("Register a wallet first: without one the job settles on the ledger.", job=job.pk)
    if SettlementOrder.objects.filter(job=job).exists():
        raise OrderExists("This job already has a signed order.", job=job.pk)
    client = client or deployments.chain_client()
    deployment = deployment_for(client, now=now)
    draft = _draft(job, wallet, deployment, now)
    sent = {"nonce": nonce, "max_amount_wei": max_amount_wei, "cumulative_max_wei": cumulative_max_wei}
    expected = {k: getattr(draft, k) for k in sent}
    if sent != expected:
        raise OrderRefused("The order is not the one to sign for this job.", expected=expected, sent=sent)
    if not int(now.timestamp()) < deadline <= draft.deadline:
        raise OrderRefused("The order's deadline is past or too far ahead.", deadline=deadline)
    order = Order(
        draft.consumer, draft.job_hash, draft.max_amount_wei, draft.cumulative_max_wei, draft.nonce, deadline
    )
    chain_id = client.chain_id()
    try:
        verify_order(order, signature, chain_id=chain_id, contract=deployment.address)
    except InvalidOrder as error:
        raise OrderRefused(f"The signature does not hold: {error}", job=job.pk) from None
    try:
        with transaction.atomic():
            return SettlementOrder.objects.create(
                job=job,
                deployment=deployment,
                consumer_address=order.consumer,
                job_hash=order.job_hash,
                max_amount_wei=order.max_amount_wei,
                cumulative_max_wei=order.cumulative_max_wei,
                nonce=order.nonce,
                deadline=order.deadline,
                chain_id=chain_id,
                signature=signature,
                created_at=now,
            )
    except IntegrityError:
        raise OrderExists("This job, or this nonce, already has a signed order.", job=job.pk) from None


def order_document(row: SettlementOrder) -> dict:
    return {
        "consumer": row.consumer_address,
        "job_hash": row.job_hash,
        "max_amount_wei": str(int(row.max_amount_wei)),
        "cumulative_max_wei": str(int(row.cumulative_max_wei)),
        "nonce": row.nonce,
        "deadline": row.deadline,
        "chain_id": row.chain_id,
        "contract": row.deployment.address,
        "signature": row.signature,
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) and value >= 2**53:
        return str(value)
    return value


def chain_demo_sign_orders(*, now: datetime, client: SettlementClient | None = None) -> list[int]:
    """Development chains only (the demo): sign, with the development account's key, the order of every
    job of a consumer whose wallet is a dev account, that has a completed lease and no order yet, in job
    order, through the same draft and submit as a wallet. Returns the jobs signed for. (A real consumer
    signs in its wallet when it submits the job.)"""
    client = client or deployments.chain_client()
    if not isinstance(client, SettlementV2Client):
        return []
    keys = {client.with_signer(k).address: k for k in client.dev_keys()}
    keys.pop(client.address, None)
    wallets = {
        w.user_id: w for w in ConsumerWallet.objects.filter(address__in=list(keys)).select_related("user")
    }
    jobs = (
        JobRequest.objects.filter(
            consumer_id__in=list(wallets), chain_order__isnull=True, leases__status=Lease.Status.COMPLETED
        )
        .distinct()
        .order_by("pk")
    )
    signed = []
    for job in jobs:
        wallet = wallets[job.consumer_id]
        draft = settlement_order_draft(user=wallet.user, job_id=job.pk, now=now, client=client)
        if draft["typed_data"] is None:
            continue
        message = draft["typed_data"]["message"]
        order = Order(
            message["consumer"],
            message["jobHash"],
            int(message["maxAmount"]),
            int(message["cumulativeMax"]),
            int(message["nonce"]),
            int(message["deadline"]),
        )
        signature = client.with_signer(keys[wallet.address]).sign(order)
        settlement_order_submit(
            user=wallet.user,
            job_id=job.pk,
            nonce=order.nonce,
            deadline=order.deadline,
            max_amount_wei=order.max_amount_wei,
            cumulative_max_wei=order.cumulative_max_wei,
            signature=signature,
            now=now,
            client=client,
        )
        signed.append(job.pk)
    return signed

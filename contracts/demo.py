"""The demo's on-chain settlement (cpx_serve, cpx_demo): fund the seeded consumers on a development
chain, then — headless — settle through the real tasks and print what landed on chain.

On the in-process EVM (default) or anvil (CHAIN_RPC_URL + CHAIN_SIGNER_KEY + CHAIN_CONTRACT_ADDRESS,
see `cpx_chain deploy`) the flow is the same: consumers get a funded development account as their
wallet, deposit into the contract, and `chain_deposits_sync` credits the ledger by event.
"""

import time
from collections.abc import Callable
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from contracts.client import ChainRejected, ChainUnavailable
from contracts.models import ChainDeposit, SettlementBatch, SettlementLease
from contracts.services import (
    chain_client,
    chain_demo_fund,
    chain_demo_sign_orders,
    deployment_for,
    settlement_claims_relay,
)

DEMO_DEPOSIT = Decimal("10000")


def demo_chain_setup(*, amount: Decimal = DEMO_DEPOSIT) -> str:
    """Fund the seeded consumers on chain; one line saying what happened (never raises)."""
    if not settings.CPX_SETTLEMENT_ON_CHAIN:
        return "on-chain settlement off (CPX_SETTLEMENT_ON_CHAIN=false): the ledger settles alone"
    try:
        client = chain_client()
        funded = chain_demo_fund(now=timezone.now(), amount=amount, client=client)
    except (ChainUnavailable, ChainRejected) as error:
        return f"on-chain settlement unavailable: {type(error).__name__}: {error}"
    where = settings.CHAIN_RPC_URL or "the in-process EVM"
    names = ", ".join(f["user"] for f in funded) or "none needed"
    return (
        f"Settlement contract {client.contract_address} on {where}; consumers funded on chain "
        f"({amount} each, credited by deposit event): {names}"
    )


def demo_chain_settle(run: Callable, *, timeout_s: float = 60.0) -> dict:
    """Settle every completed lease that can be, through the tasks (`run(task)` runs one through the
    worker and returns its answer), relay the providers' claims, reconcile; then the summary."""
    if not settings.CPX_SETTLEMENT_ON_CHAIN:
        return {"enabled": False}
    from workers import tasks

    run(tasks.sync_deposits)
    # SettlementV2 debits only under consumer-signed orders: the demo's consumers (dev accounts) sign
    # theirs here, as a wallet would when submitting. Jobs of consumers without a wallet stay on the ledger.
    signed = chain_demo_sign_orders(now=timezone.now())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = run(tasks.create_batch)
        open_batches = SettlementBatch.objects.filter(status__in=["PENDING", "SUBMITTED"]).exists()
        if not answer.get("created") and not open_batches:
            break
        time.sleep(0.5)  # the worker sends what create_batch enqueued
    client = chain_client()
    deployment = deployment_for(client, now=timezone.now())
    claims = 0
    for batch in deployment.batches.filter(
        status="CONFIRMED", settled_leases__provider_claimed=False
    ).distinct():
        claims += settlement_claims_relay(batch_id=batch.pk, client=client)["claims"]
    report = run(tasks.reconcile)
    return chain_summary(deployment_id=deployment.pk) | {
        "claims_relayed": claims,
        "orders_signed": len(signed),
        "reconcile": report,
        "rounds": demo_round_commitments(run, deployment_id=deployment.pk),
    }


def demo_round_commitments(run: Callable, *, deployment_id: int) -> dict:
    """Commit every cleared round's hashes through the task (issue 12), reconcile them, and replay the
    newest committed round against the chain."""
    from contracts.models import RoundCommitment
    from contracts.services.round_commitments import round_replay_on_chain
    from workers import tasks

    for _ in range(100):  # each run takes CPX_ROUND_COMMIT_BATCH rounds
        answer = run(tasks.commit_rounds)
        if not (answer.get("created") or answer.get("sent") or answer.get("recovered")):
            break
    reconciled = run(tasks.reconcile_rounds)
    rows = RoundCommitment.objects.filter(deployment_id=deployment_id)
    confirmed = rows.filter(status=RoundCommitment.Status.CONFIRMED)
    newest = confirmed.order_by("-round_id").first()
    replay = round_replay_on_chain(round_id=newest.round_id) if newest else None
    return {
        "committed": confirmed.count(),
        "transactions": confirmed.values("tx_hash").distinct().count(),
        "failed": rows.filter(status=RoundCommitment.Status.FAILED).count(),
        "reconcile": reconciled,
        "replayed_round": newest.round_id if newest else None,
        "replay_on_chain": replay["chain"]["status"] if replay else None,
    }


def chain_summary(*, deployment_id: int) -> dict:
    batches = SettlementBatch.objects.filter(deployment_id=deployment_id)
    confirmed = list(batches.filter(status="CONFIRMED").order_by("pk"))
    leases = dict(
        SettlementLease.objects.filter(batch__deployment_id=deployment_id)
        .values_list("recon_status")
        .annotate(n=Count("id"))
        .order_by()
    )
    deposits = ChainDeposit.objects.filter(deployment_id=deployment_id).aggregate(
        credited=Count("id", filter=Q(status="CREDITED")), amount=Sum("amount")
    )
    return {
        "enabled": True,
        "contract": confirmed[0].deployment.address if confirmed else None,
        "batches": {s: batches.filter(status=s).count() for s in SettlementBatch.Status.values},
        "confirmed": [
            {"batch": b.pk, "leases": b.lease_count, "tx_hash": b.tx_hash, "gas_used": b.gas_used}
            for b in confirmed
        ],
        "leases": leases,
        "deposits_credited": deposits["credited"],
        "deposited": str(deposits["amount"] or 0),
    }


def chain_report_lines(chain: dict) -> list[str]:
    if not chain.get("enabled"):
        return ["on chain: off"]
    lines = [
        f"on chain: {chain['batches']['CONFIRMED']} batches confirmed, "
        f"{chain['batches']['PENDING']} pending, "
        f"{chain['batches']['FAILED']} failed; {chain['deposits_credited']} deposits credited "
        f"({chain['deposited']}); orders signed: {chain.get('orders_signed', 0)}; "
        f"provider claims relayed: {chain['claims_relayed']}",
    ]
    for b in chain["confirmed"][-10:]:
        lines.append(f"  batch {b['batch']}: {b['leases']} leases, tx {b['tx_hash']}, gas {b['gas_used']}")
    lines.append(f"reconciliation per lease: {chain['leases'] or 'nothing batched'}")
    if rounds := chain.get("rounds"):
        lines.append(
            f"rounds on chain: {rounds['committed']} committed in {rounds['transactions']} transactions, "
            f"{rounds['failed']} failed; reconciler: {rounds['reconcile']}; replay of round "
            f"{rounds['replayed_round']} against the chain: {rounds['replay_on_chain']}"
        )
    return lines

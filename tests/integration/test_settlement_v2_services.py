"""The batch outbox, claims and the reconciler on SettlementV2: consumer-signed orders, cumulative
claims. In-process EVM, and anvil when CPX_ANVIL_URL is set (the services tier)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from auctions.services.leases import lease_accept, lease_complete
from contracts import selectors
from contracts import services as chain
from contracts.client import ChainUnavailable, SettlementClient, SettlementV2Client
from contracts.merkle import CreditTree
from contracts.models import ReconciliationIssue, SettlementBatch, SettlementLease, SettlementOrder
from contracts.orders import Order, job_hash, sign_order
from contracts.services.deployment import deployment_for
from market.models import LedgerTransfer
from tests.conftest import NOW, service_unavailable
from tests.factories import ConsumerFactory, ResourceFactory, job_submit
from tests.integration.test_leases import make_lease, usage

pytestmark = pytest.mark.django_db
Status = SettlementBatch.Status


@pytest.fixture(params=["evm", pytest.param("anvil", marks=pytest.mark.services)])
def operator(request) -> SettlementV2Client:
    """The operator's client on a fresh SettlementV2 whose admin is another dev account."""
    if request.param == "evm":
        base = SettlementClient.connect()
    else:
        url = os.environ.get("CPX_ANVIL_URL", "").strip()
        if not url:
            service_unavailable("CPX_ANVIL_URL is not set: no anvil node for the real-node tier")
        base = SettlementClient.connect(url, timeout_s=20)
    keys = base.dev_keys()
    client = SettlementV2Client(base._conn, keys[0])  # noqa: SLF001
    client.deploy(admin=client.with_signer(keys[9]).address, reclaim_window_s=86_400)
    return client


class Market:
    def __init__(self, operator: SettlementV2Client):
        self.operator = operator
        self.keys = operator.dev_keys()
        self._next = 1

    def wallet(self) -> SettlementV2Client:
        key = self.keys[self._next]
        self._next += 1
        return self.operator.with_signer(key)

    def consumer(self, *, deposit: Decimal = Decimal("100")):
        user = ConsumerFactory()
        user.wallet = self.wallet()
        chain.consumer_wallet_register(user=user, address=user.wallet.address, now=NOW)
        if deposit:
            user.wallet.deposit(chain.to_wei(deposit))
            chain.chain_deposits_sync(now=NOW, client=self.operator)
        return user

    def signed_job(self, consumer, *, budget: Decimal = Decimal("10")):
        """The consumer submits a job and signs its order with eth-account through the order API's
        draft (the typed data the wallet would sign), then sends the signature back."""
        job = job_submit(consumer=consumer, budget=budget)
        signed_at = datetime.fromtimestamp(self.operator.now(), UTC)  # the order's clock is the chain's
        draft = chain.settlement_order_draft(
            user=consumer, job_id=job.pk, now=signed_at, client=self.operator
        )
        message = draft["typed_data"]["message"]
        order = Order(
            message["consumer"],
            message["jobHash"],
            int(message["maxAmount"]),
            int(message["cumulativeMax"]),
            int(message["nonce"]),
            int(message["deadline"]),
        )
        signature = consumer.wallet.sign(order)
        chain.settlement_order_submit(
            user=consumer,
            job_id=job.pk,
            nonce=order.nonce,
            deadline=order.deadline,
            max_amount_wei=order.max_amount_wei,
            cumulative_max_wei=order.cumulative_max_wei,
            signature=signature,
            now=signed_at,
            client=self.operator,
        )
        return job

    def complete(self, job, *, resource=None, device_seconds=Decimal("1800")):
        lease = make_lease(job=job, resource=resource)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        ran_until = NOW + timedelta(seconds=float(device_seconds) / lease.devices)
        lease, _ = lease_complete(
            provider=lease.provider, lease_id=lease.pk, now=ran_until, **usage(device_seconds=device_seconds)
        )
        return lease

    def batch_and_submit(self) -> SettlementBatch:
        batch = chain.settlement_batch_create(now=NOW, client=self.operator)
        assert batch is not None
        return chain.settlement_batch_submit(batch_id=batch.pk, now=NOW, client=self.operator)


@pytest.fixture
def market(operator) -> Market:
    return Market(operator)


def charge_wei(lease) -> tuple[int, int]:
    payment = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:payment").amount
    fee = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:fee").amount
    return chain.to_wei(payment), chain.to_wei(fee)


class TestSignedOrdersAndCumulativeClaims:
    def test_leases_commit_under_signed_orders_and_the_provider_claims_once_for_all(self, market):
        alice, bob = market.consumer(), market.consumer()
        resource = ResourceFactory()
        first = market.complete(market.signed_job(alice), resource=resource)
        batch1 = market.batch_and_submit()
        assert batch1.status == Status.CONFIRMED and batch1.confirmed_via == "RECEIPT"
        second = market.complete(market.signed_job(alice), resource=resource)
        third = market.complete(market.signed_job(bob), resource=resource)
        escrow_before = market.operator.escrow_of(alice.wallet.address)["escrow_wei"]

        batch2 = market.batch_and_submit()

        assert batch2.status == Status.CONFIRMED and batch2.lease_count == 2
        assert market.operator.root_of(batch2.batch_key) == batch2.merkle_root
        paid = {lease.pk: charge_wei(lease) for lease in (first, second, third)}
        assert escrow_before - market.operator.escrow_of(alice.wallet.address)["escrow_wei"] == sum(
            paid[second.pk]
        )
        # The provider's credit in the second batch is its cumulative earnings over both batches.
        provider = SettlementLease.objects.get(lease=first).provider_address
        tree = CreditTree(chain.batch_credits(batch2))
        owed = sum(p for p, _ in paid.values())
        assert tree.cumulative(provider) == owed

        # The provider's proofs (API and console): one claim for its three leases over two batches.
        [group] = selectors.provider_proofs(provider=first.provider)
        assert (group["kind"], group["batch_key"]) == ("cumulative", batch2.batch_key)
        assert group["credit"]["cumulative_wei"] == str(owed) and len(group["leaves"]) == 3
        assert selectors.provider_claimable(provider=first.provider)["total_wei"] == owed

        relayer = market.wallet()
        before = market.operator.balance_wei(provider)
        relayer.claim_credit(group["batch_key"], provider, owed, group["credit"]["proof"])
        assert market.operator.balance_wei(provider) - before == owed
        assert market.operator.claimed_wei(provider) == owed

        fees = chain.settlement_fees_claim(now=NOW, client=market.operator)
        assert len(fees["txs"]) == 1
        assert chain.settlement_fees_claim(now=NOW, client=market.operator)["txs"] == []

        report = chain.settlement_reconcile(now=NOW, client=market.operator)

        assert report.by_status == {"MATCHED": 3}
        assert report.open_issues == 0
        rows = SettlementLease.objects.filter(lease__in=[first, second, third])
        assert all(row.provider_claimed and row.fee_claimed for row in rows)
        batch2.refresh_from_db()
        assert batch2.chain_seen and batch2.chain_root == batch2.merkle_root
        assert selectors.provider_proofs(provider=first.provider) == []

    def test_a_job_without_an_order_stays_on_the_ledger(self, market):
        consumer = market.consumer()
        unsigned = market.complete(job_submit(consumer=consumer, budget=Decimal("10")))
        assert chain.settlement_path(unsigned.job) == "awaiting-order"
        no_wallet = ConsumerFactory(balance=Decimal("100"))
        ledger_only = market.complete(job_submit(consumer=no_wallet, budget=Decimal("10")))
        assert chain.settlement_path(ledger_only.job) == "ledger"
        escrow = market.operator.escrow_of(consumer.wallet.address)["escrow_wei"]

        assert chain.settlement_batch_create(now=NOW, client=market.operator) is None

        assert not SettlementLease.objects.exists()
        assert market.operator.escrow_of(consumer.wallet.address)["escrow_wei"] == escrow

    def test_an_order_whose_maximum_is_too_small_is_refused_and_the_lease_stays_unpaid(self, market):
        consumer = market.consumer()
        job = job_submit(consumer=consumer, budget=Decimal("10"))
        deployment = deployment_for(market.operator, now=NOW)
        small = Order(consumer.wallet.address, job_hash(job.pk), 1, 1, 1, market.operator.now() + 10**6)
        SettlementOrder.objects.create(
            job=job,
            deployment=deployment,
            consumer_address=small.consumer,
            job_hash=small.job_hash,
            max_amount_wei=1,
            cumulative_max_wei=1,
            nonce=1,
            deadline=small.deadline,
            chain_id=market.operator.chain_id(),
            signature=sign_order(
                small,
                consumer.wallet._account.key,
                chain_id=market.operator.chain_id(),  # noqa: SLF001
                contract=deployment.address,
            ),  # fmt: skip
            created_at=NOW,
        )
        lease = market.complete(job)
        escrow = market.operator.escrow_of(consumer.wallet.address)["escrow_wei"]

        assert chain.settlement_batch_create(now=NOW, client=market.operator) is None

        assert not SettlementLease.objects.filter(lease=lease).exists()
        assert market.operator.escrow_of(consumer.wallet.address)["escrow_wei"] == escrow
        [issue] = ReconciliationIssue.objects.filter(kind=ReconciliationIssue.Kind.ORDER_REFUSED)
        assert f"lease {lease.pk}" in issue.detail and "signed maximum" in issue.detail
        report = chain.settlement_reconcile(now=NOW, client=market.operator)
        assert report.by_status == {} and report.open_issues == 1

    def test_a_lost_receipt_is_recovered_by_the_batch_key_without_a_second_send(self, market):
        consumer = market.consumer()
        market.complete(market.signed_job(consumer))
        batch = chain.settlement_batch_create(now=NOW, client=market.operator)

        class LostReceipt:
            ARTIFACT = "SettlementV2"

            def __init__(self, inner):
                self._inner = inner

            def __getattr__(self, name):
                return getattr(self._inner, name)

            def commit_credits(self, *args):
                self._inner.commit_credits(*args)
                raise ChainUnavailable("connection reset after sending")

        with pytest.raises(ChainUnavailable):
            chain.settlement_batch_submit(batch_id=batch.pk, now=NOW, client=LostReceipt(market.operator))
        batch.refresh_from_db()
        assert batch.status == Status.PENDING and batch.next_attempt_at > NOW
        # Cumulative totals are ordered: no second batch while this one is in flight.
        market.complete(market.signed_job(consumer))
        assert chain.settlement_batch_create(now=NOW, client=market.operator) is None

        later = batch.next_attempt_at
        batch = chain.settlement_batch_submit(batch_id=batch.pk, now=later, client=market.operator)

        assert batch.status == Status.CONFIRMED and batch.confirmed_via == "CHAIN_LOOKUP"
        commits = market.operator.events(names=["BatchCommitted"])
        assert len(commits) == 1
        assert chain.settlement_batch_create(now=later, client=market.operator) is not None

    def test_the_demo_signs_its_dev_consumers_orders_and_settles_them(self, market):
        consumer = market.consumer()
        lease = market.complete(job_submit(consumer=consumer, budget=Decimal("10")))
        signed_at = datetime.fromtimestamp(market.operator.now(), UTC)

        assert chain.chain_demo_sign_orders(now=signed_at, client=market.operator) == [lease.job_id]
        assert chain.chain_demo_sign_orders(now=signed_at, client=market.operator) == []

        assert chain.settlement_path(lease.job) == "on-chain"
        batch = market.batch_and_submit()
        assert batch.status == Status.CONFIRMED
        assert SettlementLease.objects.get(lease=lease).batch_id == batch.pk


class TestJobPageShowsThePath:
    def test_the_job_page_says_which_settlement_path_the_job_is_on(self, market, client):
        consumer = market.consumer()
        unsigned = job_submit(consumer=consumer, budget=Decimal("10"))
        signed = market.signed_job(consumer)
        client.force_login(consumer)

        def path(job):
            page = client.get(reverse("pages:job-detail", args=[job.pk])).content.decode()
            return page.split('id="settlement-path" class="path-', 1)[1].split('"', 1)[0]

        assert (path(signed), path(unsigned)) == ("on-chain", "awaiting-order")
        no_wallet = ConsumerFactory(balance=Decimal("100"))
        client.force_login(no_wallet)
        assert path(job_submit(consumer=no_wallet, budget=Decimal("10"))) == "ledger"


class TestOutboxFaultsOnV2:
    def test_node_down_backs_off_then_a_rejected_commit_fails_and_an_operator_retry_settles(self, market):
        consumer = market.consumer()
        lease = market.complete(market.signed_job(consumer))
        batch = chain.settlement_batch_create(now=NOW, client=market.operator)

        class NodeDown:
            ARTIFACT = "SettlementV2"

            def __init__(self, inner):
                self._inner = inner

            def __getattr__(self, name):
                return getattr(self._inner, name)

            def commit_credits(self, *args):
                raise ChainUnavailable("connection refused")

        with pytest.raises(ChainUnavailable):
            chain.settlement_batch_submit(batch_id=batch.pk, now=NOW, client=NodeDown(market.operator))
        batch.refresh_from_db()
        assert (batch.status, batch.attempts) == (Status.PENDING, 1)
        assert batch.next_attempt_at == NOW + timedelta(seconds=5)
        # Not due yet: nothing is sent.
        same = chain.settlement_batch_submit(batch_id=batch.pk, now=NOW, client=market.operator)
        assert same.status == Status.PENDING and market.operator.events(names=["BatchCommitted"]) == []

        # The admin pauses the contract: the commit is rejected, the batch FAILED with the reason.
        admin = market.operator.with_signer(market.keys[9])
        admin.admin_call("setPaused", True)
        failed = chain.settlement_batch_submit(
            batch_id=batch.pk, now=batch.next_attempt_at, client=market.operator
        )
        assert failed.status == Status.FAILED and failed.error_code == "IsPaused"
        admin.admin_call("setPaused", False)

        retried = chain.settlement_batch_retry(batch_id=batch.pk, now=NOW)
        done = chain.settlement_batch_submit(batch_id=retried.pk, now=NOW, client=market.operator)

        assert done.status == Status.CONFIRMED
        assert SettlementLease.objects.get(lease=lease).batch_id == batch.pk
        assert len(market.operator.events(names=["BatchCommitted"])) == 1


class TestOutOfOrderCompletion:
    def test_an_older_jobs_lease_completing_after_a_newer_one_still_settles_on_chain(self, market):
        consumer = market.consumer()
        older, newer = market.signed_job(consumer), market.signed_job(consumer)
        market.complete(newer)
        assert market.batch_and_submit().status == Status.CONFIRMED
        late = market.complete(older)

        batch = market.batch_and_submit()

        assert batch.status == Status.CONFIRMED
        assert SettlementLease.objects.get(lease=late).batch_id == batch.pk
        assert not ReconciliationIssue.objects.filter(kind=ReconciliationIssue.Kind.ORDER_REFUSED).exists()
        report = chain.settlement_reconcile(now=NOW, client=market.operator)
        assert report.by_status == {"MATCHED": 2} and report.open_issues == 0

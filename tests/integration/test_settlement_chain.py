"""On-chain settlement end to end: deposits credited once, batches of completed leases committed as
Merkle roots, providers claiming with the API's proofs, the reconciler — and the faults: the node down
while submitting, a crash between sending and recording, a replayed batch, a tampered leaf.

Every test runs on the in-process EVM and, with CPX_ANVIL_URL, on anvil (fails instead of skipping
under CPX_REQUIRE_SERVICES=1). Each test deploys its own contract; services get the client passed in.
"""

import os
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError
from eth_utils import keccak

from auctions.services.leases import lease_accept, lease_complete
from config.errors import Conflict, InvalidInput, NotFound
from contracts import selectors
from contracts import services as chain
from contracts.client import ChainRejected, ChainUnavailable, SettlementClient
from contracts.merkle import Leaf
from contracts.models import ChainDeposit, ReconciliationIssue, SettlementBatch, SettlementLease
from contracts.services import batches, deployment
from market.models import LedgerAccount, LedgerTransfer
from market.services.ledger import ledger_account_for_user
from tests.conftest import NOW, service_unavailable
from tests.factories import ConsumerFactory, job_submit
from tests.integration.test_leases import make_lease, usage

pytestmark = pytest.mark.django_db
Status = SettlementBatch.Status
STALE = timedelta(seconds=121)


@pytest.fixture(params=["evm", pytest.param("anvil", marks=pytest.mark.services)])
def operator(request) -> SettlementClient:
    """The operator's client on a freshly deployed Settlement, on this parametrisation's chain."""
    if request.param == "evm":
        base = SettlementClient.connect()
    else:
        url = os.environ.get("CPX_ANVIL_URL", "").strip()
        if not url:
            service_unavailable("CPX_ANVIL_URL is not set: no anvil node for the real-node tier")
        base = SettlementClient.connect(url, timeout_s=20)
    client = base.with_signer(base.dev_keys()[0])
    client.deploy(claim_window_s=1_000, reclaim_window_s=5_000)
    return client


@dataclass
class Market:
    operator: SettlementClient
    keys: list[str]
    _next_key: int = 1

    def consumer(self, *, deposit: Decimal = Decimal("100"), ledger: Decimal = Decimal(0)):
        """A consumer with a dev-account wallet and `deposit` deposited on chain and synced."""
        user = ConsumerFactory(balance=ledger or None)
        wallet = self.wallet()
        chain.consumer_wallet_register(user=user, address=wallet.address, now=NOW)
        if deposit:
            wallet.deposit(chain.to_wei(deposit))
            chain.chain_deposits_sync(now=NOW, client=self.operator)
        user.wallet = wallet
        return user

    def wallet(self) -> SettlementClient:
        key = self.keys[self._next_key]
        self._next_key += 1
        return self.operator.with_signer(key)

    def completed_lease(self, consumer=None, *, device_seconds=Decimal("1800"), **lease_kwargs):
        consumer = consumer or self.consumer()
        job = job_submit(consumer=consumer, budget=Decimal("10"))
        lease = make_lease(job=job, **lease_kwargs)
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        # Completed once its devices could have run the usage (metering is bounded by wall time).
        ran_until = NOW + timedelta(seconds=float(device_seconds) / lease.devices)
        lease, _ = lease_complete(
            provider=lease.provider, lease_id=lease.pk, now=ran_until, **usage(device_seconds=device_seconds)
        )
        lease.job.consumer.wallet = getattr(consumer, "wallet", None)
        return lease

    def batch(self, **kwargs) -> SettlementBatch:
        batch = chain.settlement_batch_create(now=NOW, client=self.operator, **kwargs)
        assert batch is not None
        return batch

    def submit(self, batch, *, now=NOW, client=None) -> SettlementBatch:
        return chain.settlement_batch_submit(batch_id=batch.pk, now=now, client=client or self.operator)

    def commits(self, batch) -> list[dict]:
        return [e for e in self.operator.batch_events(batch.batch_key) if e["event"] == "BatchCommitted"]


@pytest.fixture
def market(operator) -> Market:
    return Market(operator=operator, keys=operator.dev_keys())


def consumer_balance(user) -> Decimal:
    return ledger_account_for_user(user=user, kind=LedgerAccount.Kind.CONSUMER).balance


class LostReceipt:
    """A client whose commit reaches the chain but whose answer is lost (the node dropped the line)."""

    def __init__(self, inner: SettlementClient):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def commit_batch(self, batch_id, leaves):
        self._inner.commit_batch(batch_id, leaves)
        raise ChainUnavailable("connection reset after sending")


class NodeDown(LostReceipt):
    """A client whose every send fails before reaching the node."""

    def commit_batch(self, batch_id, leaves):
        raise ChainUnavailable("connection refused")


# ------------------------------------------------------------------ money and wallets


class TestMoneyMapping:
    def test_ledger_amounts_map_to_wei_exactly_and_back(self, settings):
        settings.CHAIN_WEI_PER_UNIT = 10**12
        assert chain.to_wei(Decimal("1.000001")) == 10**12 + 10**6
        assert chain.from_wei(10**12 + 10**6 + 7) == (Decimal("1.000001"), 7)

    def test_a_scale_that_splits_the_quantum_is_refused(self, settings):
        settings.CHAIN_WEI_PER_UNIT = 10**6 + 1
        with pytest.raises(ValueError, match="multiple of 10"):
            chain.to_wei(Decimal("1"))


class TestWallets:
    def test_a_wallet_is_checked_and_belongs_to_one_consumer(self, market):
        user, other = ConsumerFactory(), ConsumerFactory()
        address = market.wallet().address
        assert chain.consumer_wallet_register(user=user, address=address, now=NOW).address == address
        assert chain.consumer_wallet_register(user=user, address=address.lower(), now=NOW).user == user
        with pytest.raises(Conflict):
            chain.consumer_wallet_register(user=other, address=address, now=NOW)
        with pytest.raises(InvalidInput):
            chain.consumer_wallet_register(user=other, address="0x1234", now=NOW)
        bad_checksum = address[:2] + address[2:].swapcase()
        if bad_checksum != address and bad_checksum.lower() != bad_checksum:
            with pytest.raises(InvalidInput):
                chain.consumer_wallet_register(user=other, address=bad_checksum, now=NOW)


class TestDeposits:
    def test_a_deposit_is_credited_once_even_when_the_sync_runs_twice(self, market):
        user = market.consumer(deposit=Decimal(0))
        user.wallet.deposit(chain.to_wei(Decimal("25.5")))

        first = chain.chain_deposits_sync(now=NOW, client=market.operator)
        second = chain.chain_deposits_sync(now=NOW, client=market.operator)

        assert (first.credited, second.credited) == (1, 0)
        assert consumer_balance(user) == Decimal("25.5")
        row = ChainDeposit.objects.get()
        assert row.status == ChainDeposit.Status.CREDITED and row.user == user
        transfer = LedgerTransfer.objects.get(reference__startswith=f"chain:deposit:{row.tx_hash}:")
        assert transfer.amount == Decimal("25.5")

        user.wallet.deposit(chain.to_wei(Decimal("1")))
        assert chain.chain_deposits_sync(now=NOW, client=market.operator).credited == 1
        assert consumer_balance(user) == Decimal("26.5")

    def test_a_sync_that_forgot_its_cursor_credits_nothing_twice(self, market):
        user = market.consumer(deposit=Decimal("10"))
        deployment = chain.deployment_for(market.operator, now=NOW)
        deployment.deposits_scanned_block = -1
        deployment.save()

        assert chain.chain_deposits_sync(now=NOW, client=market.operator).credited == 0
        assert consumer_balance(user) == Decimal("10")
        assert ChainDeposit.objects.count() == 1

    def test_a_deposit_from_an_unknown_address_waits_for_its_wallet(self, market):
        wallet = market.wallet()
        wallet.deposit(chain.to_wei(Decimal("3")))
        assert chain.chain_deposits_sync(now=NOW, client=market.operator).unmatched == 1

        user = ConsumerFactory()
        chain.consumer_wallet_register(user=user, address=wallet.address, now=NOW)
        result = chain.chain_deposits_sync(now=NOW, client=market.operator)

        assert (result.credited, result.unmatched) == (1, 0)
        assert consumer_balance(user) == Decimal("3")

    def test_dust_below_the_quantum_is_not_credited(self, market):
        wallet = market.wallet()
        user = ConsumerFactory()
        chain.consumer_wallet_register(user=user, address=wallet.address, now=NOW)
        wallet.deposit(5)

        chain.chain_deposits_sync(now=NOW, client=market.operator)

        assert ChainDeposit.objects.get().status == ChainDeposit.Status.DUST
        assert consumer_balance(user) == 0


# ------------------------------------------------------------------ batches, end to end


class TestEndToEnd:
    def test_a_completed_lease_is_committed_claimed_with_the_api_proof_and_reconciled(self, market):
        lease = market.completed_lease()
        payment = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:payment").amount
        fee = LedgerTransfer.objects.get(reference=f"lease:{lease.pk}:fee").amount
        escrow_before = market.operator.escrow_of(lease.job.consumer.wallet.address)["escrow_wei"]

        batch = market.batch()
        assert (batch.status, batch.lease_count, batch.leaf_count) == (Status.PENDING, 1, 2)
        assert batch.total == payment + fee

        batch = market.submit(batch)

        assert batch.status == Status.CONFIRMED and batch.confirmed_via == "RECEIPT"
        assert batch.tx_hash.startswith("0x") and len(batch.tx_hash) == 66
        assert batch.gas_used > 0 and batch.block_number >= 1
        on_chain = market.operator.batch_status(batch.batch_key)
        assert on_chain["root"] == batch.merkle_root and on_chain["kind"] == "merkle"
        escrow_after = market.operator.escrow_of(lease.job.consumer.wallet.address)["escrow_wei"]
        assert escrow_before - escrow_after == chain.to_wei(payment + fee)

        [group] = selectors.provider_proofs(provider=lease.provider)
        [item] = group["leaves"]
        leaf = Leaf(
            *(
                int(item["leaf"][k]) if k.endswith(("_id", "_wei")) else item["leaf"][k]
                for k in ("lease_id", "consumer", "provider", "amount_wei", "refund_wei")
            )
        )
        assert leaf.amount_wei == chain.to_wei(payment)
        relayer = market.wallet()
        paid_before = market.operator.balance_wei(lease.provider.wallet_address)
        relayer.claim(group["batch_key"], leaf, item["proof"])
        assert market.operator.balance_wei(lease.provider.wallet_address) - paid_before == chain.to_wei(
            payment
        )

        report = chain.settlement_reconcile(now=NOW, client=market.operator)

        assert report.by_status == {"MATCHED": 1}
        row = SettlementLease.objects.get(lease=lease)
        assert row.recon_status == "MATCHED" and row.provider_claimed and not row.fee_claimed
        batch.refresh_from_db()
        assert batch.chain_seen and batch.chain_root == batch.merkle_root
        assert report.open_issues == 0
        assert selectors.provider_proofs(provider=lease.provider) == []
        assert selectors.lease_chain_status(lease_ids=[lease.pk])[lease.pk]["tx_hash"] == batch.tx_hash

    def test_many_leases_of_several_consumers_and_providers_settle_in_one_batch_and_claim_many(self, market):
        consumers = [market.consumer(), market.consumer()]
        leases = [market.completed_lease(consumers[i % 2], device_seconds=Decimal(600 + i)) for i in range(5)]
        batch = market.submit(market.batch())
        assert batch.status == Status.CONFIRMED and batch.lease_count == 5

        for lease in leases:
            for group in selectors.provider_proofs(provider=lease.provider):
                multi = group["multiproof"]
                leaves = [
                    Leaf(
                        int(x["lease_id"]),
                        x["consumer"],
                        x["provider"],
                        int(x["amount_wei"]),
                        int(x["refund_wei"]),
                    )
                    for x in multi["leaves"]
                ]
                market.operator.claim_many(group["batch_key"], leaves, multi["proof"], multi["flags"])
        fees = chain.settlement_claims_relay(batch_id=batch.pk, client=market.operator)
        assert fees["leaves"] == 5  # only the fee leaves were left

        report = chain.settlement_reconcile(now=NOW, client=market.operator)
        assert report.by_status == {"MATCHED": 5}
        assert SettlementLease.objects.filter(provider_claimed=True, fee_claimed=True).count() == 5
        assert market.operator.batch_status(batch.batch_key)["remaining_wei"] == 0

    def test_a_lease_is_in_one_batch_only(self, market):
        lease = market.completed_lease()
        batch = market.batch()
        assert chain.settlement_batch_create(now=NOW, client=market.operator) is None
        with pytest.raises(IntegrityError):
            SettlementLease.objects.create(
                batch=batch,
                lease=lease,
                consumer_address=lease.job.consumer.wallet.address,
                provider_address=lease.provider.wallet_address,
                fee_address=market.operator.address,
                provider_amount=1,
                fee_amount=0,
                provider_wei=1,
                fee_wei=0,
            )

    def test_leases_wait_when_the_escrow_does_not_cover_them_or_the_consumer_has_no_wallet(self, market):
        poor = market.consumer(deposit=Decimal("0.01"), ledger=Decimal("100"))
        market.completed_lease(poor)
        market.completed_lease(ConsumerFactory(balance=Decimal("100")))
        assert chain.settlement_batch_create(now=NOW, client=market.operator) is None

    def test_batch_size_is_respected(self, market):
        consumer = market.consumer()
        for _ in range(3):
            market.completed_lease(consumer)
        assert market.batch(max_leases=2).lease_count == 2
        assert market.batch(max_leases=2).lease_count == 1
        with pytest.raises(InvalidInput):
            chain.settlement_batch_create(now=NOW, client=market.operator, max_leases=0)


# ------------------------------------------------------------------ faults


class TestFaults:
    def test_node_down_while_submitting_is_retried_later_nothing_lost_nothing_doubled(self, market):
        lease = market.completed_lease()
        batch = market.batch()

        with pytest.raises(ChainUnavailable):
            market.submit(batch, client=NodeDown(market.operator))

        batch.refresh_from_db()
        assert (batch.status, batch.attempts, batch.error_code) == (Status.PENDING, 1, "chain_unavailable")
        assert batch.next_attempt_at > NOW
        assert market.submit(batch).status == Status.PENDING  # backing off: not due yet
        assert batch.pk not in chain.settlement_batches_due(now=NOW)
        assert batch.pk in chain.settlement_batches_due(now=batch.next_attempt_at)

        batch = market.submit(batch, now=batch.next_attempt_at)

        assert batch.status == Status.CONFIRMED and batch.attempts == 2
        assert len(market.commits(batch)) == 1
        assert SettlementLease.objects.get(lease=lease).batch == batch

    def test_a_dead_node_port_leaves_the_batch_pending(self, market):
        market.completed_lease()
        batch = market.batch()
        dead = SettlementClient.connect(
            "http://127.0.0.1:9", market.keys[0], market.operator.contract_address, timeout_s=1
        )
        with pytest.raises(ChainUnavailable):
            market.submit(batch, client=dead)
        batch.refresh_from_db()
        assert batch.status == Status.PENDING and batch.tx_hash == ""

    def test_a_lost_receipt_is_recovered_from_the_chain_without_a_second_send(self, market):
        market.completed_lease()
        batch = market.batch()

        with pytest.raises(ChainUnavailable):
            market.submit(batch, client=LostReceipt(market.operator))
        batch.refresh_from_db()
        assert batch.status == Status.PENDING

        batch = market.submit(batch, now=batch.next_attempt_at)

        assert (batch.status, batch.confirmed_via) == (Status.CONFIRMED, "CHAIN_LOOKUP")
        [commit] = market.commits(batch)
        assert batch.tx_hash == commit["tx_hash"] and batch.block_number == commit["block_number"]

    def test_a_crash_after_sending_before_recording_is_recovered_by_the_batch_key(self, market, monkeypatch):
        lease = market.completed_lease()
        consumer = lease.job.consumer.wallet.address
        batch = market.batch()

        def crash(*args, **kwargs):
            raise RuntimeError("worker killed between send and record")

        with monkeypatch.context() as m:
            m.setattr(batches, "_record_receipt", crash)
            with pytest.raises(RuntimeError):
                market.submit(batch)
        batch.refresh_from_db()
        assert batch.status == Status.SUBMITTED and batch.tx_hash == ""
        escrow_after_send = market.operator.escrow_of(consumer)["escrow_wei"]

        # A live worker may still hold it: left alone until it is stale.
        assert market.submit(batch, now=NOW + timedelta(seconds=10)).status == Status.SUBMITTED
        assert batch.pk not in chain.settlement_batches_due(now=NOW + timedelta(seconds=10))
        assert batch.pk in chain.settlement_batches_due(now=NOW + STALE)

        batch = market.submit(batch, now=NOW + STALE)

        assert (batch.status, batch.confirmed_via, batch.attempts) == (Status.CONFIRMED, "CHAIN_LOOKUP", 2)
        [commit] = market.commits(batch)
        assert batch.tx_hash == commit["tx_hash"]
        assert market.operator.escrow_of(consumer)["escrow_wei"] == escrow_after_send  # debited once

    def test_a_replayed_batch_is_rejected_by_the_contract_and_recorded_as_already_settled(self, market):
        market.completed_lease()
        batch = market.batch()
        # Another sender (say, a restored backup of this worker) committed the same batch first.
        market.operator.commit_batch(batch.batch_key, chain.batch_leaves(batch))

        batch = market.submit(batch)

        assert (batch.status, batch.confirmed_via) == (Status.CONFIRMED, "ALREADY_SETTLED")
        assert len(market.commits(batch)) == 1
        with pytest.raises(ChainRejected) as info:
            market.operator.commit_batch(batch.batch_key, chain.batch_leaves(batch))
        assert info.value.error_name == "BatchAlreadySettled"
        assert market.submit(batch).status == Status.CONFIRMED  # and a confirmed batch is never resent

    def test_a_key_taken_on_chain_with_another_root_fails_the_batch(self, market):
        lease = market.completed_lease()
        batch = market.batch()
        other = Leaf(lease.pk, lease.job.consumer.wallet.address, lease.provider.wallet_address, 1, 0)
        market.operator.commit_batch(batch.batch_key, [other])

        batch = market.submit(batch)

        assert (batch.status, batch.error_code) == (Status.FAILED, "RootMismatch")
        assert ReconciliationIssue.objects.filter(kind="ROOT_MISMATCH", batch=batch).exists()

    def test_a_tampered_leaf_is_refused(self, market):
        lease = market.completed_lease()
        batch = market.submit(market.batch())
        tree = chain.batch_tree(batch)
        index = next(i for i, leaf in enumerate(tree.leaves) if leaf.lease_id == lease.pk)
        leaf, proof = tree.leaves[index], tree.proof(index)
        relayer = market.wallet()

        for tampered in (
            Leaf(leaf.lease_id, leaf.consumer, leaf.provider, leaf.amount_wei + 1, 0),
            Leaf(leaf.lease_id, leaf.consumer, market.operator.address, leaf.amount_wei, 0),
            Leaf(leaf.lease_id + 1, leaf.consumer, leaf.provider, leaf.amount_wei, 0),
        ):
            with pytest.raises(ChainRejected) as info:
                relayer.claim(batch.batch_key, tampered, proof)
            assert info.value.error_name == "InvalidProof"
        relayer.claim(batch.batch_key, leaf, proof)
        with pytest.raises(ChainRejected) as info:
            relayer.claim(batch.batch_key, leaf, proof)
        assert info.value.error_name == "LeafAlreadyClaimed"

    def test_a_rejected_batch_fails_with_the_reason_and_an_operator_retry_settles_it(self, market):
        lease = market.completed_lease()
        wallet = lease.job.consumer.wallet
        batch = market.batch()
        # The escrow left the contract behind CPX's back (an operator refund on chain).
        market.operator.refund(wallet.address, market.operator.escrow_of(wallet.address)["escrow_wei"])

        batch = market.submit(batch)

        assert (batch.status, batch.error_code) == (Status.FAILED, "InsufficientEscrow")
        assert market.submit(batch).status == Status.FAILED  # not resent by itself
        assert chain.settlement_batch_retry(batch_id=batch.pk, now=NOW).status == Status.PENDING
        with pytest.raises(Conflict):
            chain.settlement_batch_retry(batch_id=batch.pk, now=NOW)  # only a FAILED batch
        wallet.deposit(chain.to_wei(Decimal("50")))

        batch = market.submit(batch)

        assert batch.status == Status.CONFIRMED and batch.attempts == 2
        with pytest.raises(NotFound):
            chain.settlement_batch_retry(batch_id=10**9, now=NOW)
        with pytest.raises(Conflict):
            chain.settlement_batch_retry(batch_id=batch.pk, now=NOW)

    def test_a_batch_of_another_chain_is_failed_not_sent(self, market):
        market.completed_lease()
        batch = market.batch()
        elsewhere = SettlementClient.connect()
        elsewhere.deploy()

        batch = market.submit(batch, client=elsewhere)

        assert (batch.status, batch.error_code) == (Status.FAILED, "WrongChain")


# ------------------------------------------------------------------ reconciliation


class TestReconcile:
    def test_pending_and_confirmed_batches_and_a_ledger_change_after_batching(self, market):
        consumer = market.consumer()
        first, second = market.completed_lease(consumer), market.completed_lease(consumer)
        confirmed = market.submit(market.batch(max_leases=1))
        pending = market.batch(max_leases=1)

        report = chain.settlement_reconcile(now=NOW, client=market.operator)
        assert report.by_status == {"MATCHED": 1, "PENDING": 1}
        assert confirmed.settled_leases.get().lease == first and pending.settled_leases.get().lease == second

        LedgerTransfer.objects.filter(reference=f"lease:{first.pk}:payment").update(
            amount=Decimal("0.000001")
        )
        report = chain.settlement_reconcile(now=NOW, client=market.operator)

        row = SettlementLease.objects.get(lease=first)
        assert row.recon_status == "AMOUNT_MISMATCH" and "0.000001" in row.recon_detail
        assert report.by_status == {"AMOUNT_MISMATCH": 1, "PENDING": 1}

    def test_a_confirmed_batch_the_chain_does_not_have_is_missing_on_chain(self, market):
        market.completed_lease()
        batch = market.batch()
        SettlementBatch.objects.filter(pk=batch.pk).update(status=Status.CONFIRMED, tx_hash="0x" + "ab" * 32)

        report = chain.settlement_reconcile(now=NOW, client=market.operator)

        assert report.by_status == {"MISSING_ON_CHAIN": 1}
        assert ReconciliationIssue.objects.filter(kind="MISSING_ON_CHAIN", batch=batch).exists()

    def test_batches_and_claims_cpx_does_not_know_are_flagged_once(self, market):
        lease = market.completed_lease()
        wallet = lease.job.consumer.wallet
        batch = market.submit(market.batch())
        stranger = Leaf(999_999, wallet.address, market.operator.address, 5, 0)
        foreign_key = keccak(b"not a cpx batch")
        market.operator.commit_batch(foreign_key, [stranger])
        # The database lost the lease row of a leaf that is then claimed on chain.
        tree = chain.batch_tree(batch)
        index = next(i for i, leaf in enumerate(tree.leaves) if leaf.lease_id == lease.pk)
        SettlementLease.objects.filter(lease=lease).delete()
        market.operator.claim(batch.batch_key, tree.leaves[index], tree.proof(index))

        chain.settlement_reconcile(now=NOW, client=market.operator)
        chain.settlement_reconcile(now=NOW, client=market.operator)

        unknown_batch = ReconciliationIssue.objects.get(kind="UNKNOWN_BATCH")
        assert unknown_batch.key == "0x" + foreign_key.hex()
        unknown_leaf = ReconciliationIssue.objects.get(kind="UNKNOWN_ON_CHAIN")
        assert unknown_leaf.batch == batch and unknown_leaf.key == f"{batch.batch_key}:{lease.pk}"
        # The batch's escrow debit no longer matches its (now fewer) lease rows either.
        assert ReconciliationIssue.objects.filter(kind="DEBIT_MISMATCH", batch=batch).exists()


# ------------------------------------------------------------------ tasks (called directly)


class TestTasks:
    NAMES = [
        "contracts.create_batch",
        "contracts.submit_batch",
        "contracts.reconcile",
        "contracts.sync_deposits",
    ]

    def test_are_named_late_acked_time_limited_and_retry_only_transient_errors(self):
        from django.db import InterfaceError, OperationalError

        from config.celery import app
        from workers import tasks  # noqa: F401 - registers them

        for name in self.NAMES:
            task = app.tasks[name]
            assert task.acks_late is True, name
            assert set(task.autoretry_for) == {OperationalError, InterfaceError, ChainUnavailable}, name
            assert 0 < task.soft_time_limit < task.time_limit, name

    def test_create_submit_reconcile_and_sync_through_the_tasks(self, market, monkeypatch):
        from workers import tasks

        monkeypatch.setattr(deployment, "chain_client", lambda: market.operator)
        market.completed_lease()
        sent = []
        monkeypatch.setattr(tasks.submit_batch, "delay_on_commit", lambda **kw: sent.append(kw))

        created = tasks.create_batch()

        assert created["created"] and created["leases"] == 1 and sent == [{"batch_id": created["created"]}]
        answer = tasks.submit_batch(batch_id=created["created"])
        assert answer["status"] == "CONFIRMED" and answer["tx_hash"].startswith("0x")
        assert tasks.reconcile()["leases"] == {"MATCHED": 1}
        assert tasks.sync_deposits()["credited"] == 0
        assert tasks.submit_batch(batch_id=10**9)["error"] == "settlement_batch_not_found"

    def test_the_submit_task_raises_for_a_retry_when_the_node_is_down(self, market, monkeypatch):
        from workers import tasks

        market.completed_lease()
        batch = market.batch()
        monkeypatch.setattr(deployment, "chain_client", lambda: NodeDown(market.operator))

        with pytest.raises(ChainUnavailable):
            tasks.submit_batch(batch_id=batch.pk)
        batch.refresh_from_db()
        assert batch.status == Status.PENDING

    def test_switched_off_they_do_nothing(self, settings):
        from workers import tasks

        settings.CPX_SETTLEMENT_ON_CHAIN = False
        assert tasks.create_batch() == tasks.reconcile() == tasks.sync_deposits()
        assert "skipped" in tasks.create_batch()

"""The settlement API: batches and reconciliation (operator), Merkle proofs a provider claims with,
the consumer's wallet and its leases' on-chain status; roles and bad input answered clearly."""

import pytest
from django.urls import reverse

from contracts import services as chain
from contracts.merkle import Leaf
from contracts.models import SettlementBatch
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import ConsumerFactory, OperatorFactory, ProviderFactory
from tests.integration import test_settlement_chain as chain_tests

pytestmark = pytest.mark.django_db
# The chain fixtures (in-process EVM, and anvil with CPX_ANVIL_URL) of the integration tests.
operator = chain_tests.operator
market = chain_tests.market


@pytest.fixture
def ops():
    return bearer_client(OperatorFactory())


def confirmed(market):
    lease = market.completed_lease()
    batch = market.submit(market.batch())
    chain.settlement_reconcile(now=NOW, client=market.operator)
    return lease, batch


def leaf_of(item: dict) -> Leaf:
    x = item
    return Leaf(int(x["lease_id"]), x["consumer"], x["provider"], int(x["amount_wei"]), int(x["refund_wei"]))


class TestBatches:
    def test_lists_batches_with_tx_hash_and_filters_by_status(self, market, ops):
        _, batch = confirmed(market)
        market.completed_lease()
        pending = market.batch()

        body = ops.get(reverse("settlement-list")).json()

        assert body["count"] == 2
        first = body["results"][1]
        assert (
            first["id"] == batch.pk and first["status"] == "CONFIRMED" and first["tx_hash"] == batch.tx_hash
        )
        assert first["matched"] == 1 and first["differing"] == 0 and first["gas_used"] > 0
        assert isinstance(first["total_wei"], str) and int(first["total_wei"]) == int(batch.total_wei)
        only = ops.get(reverse("settlement-list"), {"status": "PENDING"}).json()
        assert [b["id"] for b in only["results"]] == [pending.pk]

    def test_a_bad_status_filter_is_refused(self, ops):
        assert_error(ops.get(reverse("settlement-list"), {"status": "DONE"}), 400, "invalid")

    def test_detail_shows_each_lease_ledger_beside_chain_and_the_issues(self, market, ops):
        lease, batch = confirmed(market)

        body = ops.get(reverse("settlement-detail", args=[batch.pk])).json()

        assert body["batch_key"] == batch.batch_key and body["merkle_root"] == batch.merkle_root
        [row] = body["leases"]
        assert row["lease"] == lease.pk and row["recon_status"] == "MATCHED"
        assert int(row["provider_wei"]) == chain.to_wei(lease.chain_settlement.provider_amount)
        assert body["issues"] == []

    def test_an_unknown_batch_is_404(self, ops):
        assert_error(ops.get(reverse("settlement-detail", args=[999])), 404, "settlement_batch_not_found")

    def test_only_operators_see_batches(self, market):
        consumer = bearer_client(ConsumerFactory())
        assert_error(consumer.get(reverse("settlement-list")), 403, "permission_denied")
        assert_error(consumer.get(reverse("settlement-detail", args=[1])), 403, "permission_denied")
        assert_error(consumer.post(reverse("settlement-retry", args=[1])), 403, "permission_denied")

    def test_retry_sends_a_failed_batch_again_and_refuses_any_other(self, market, ops):
        market.completed_lease()
        batch = market.batch()
        SettlementBatch.objects.filter(pk=batch.pk).update(status="FAILED", error_code="InsufficientEscrow")

        body = ops.post(reverse("settlement-retry", args=[batch.pk])).json()

        assert body["status"] == "PENDING"
        assert_error(
            ops.post(reverse("settlement-retry", args=[batch.pk])), 409, "settlement_batch_not_retryable"
        )
        assert_error(ops.post(reverse("settlement-retry", args=[999])), 404, "settlement_batch_not_found")


class TestProviderProofs:
    def test_a_provider_claims_with_the_proof_the_api_gives(self, market):
        lease, batch = confirmed(market)
        api = bearer_client(lease.provider.user)

        body = api.get(reverse("provider-proofs")).json()

        assert body["count"] == 1
        [group] = body["results"]
        assert group["batch_key"] == batch.batch_key and group["contract"] == market.operator.contract_address
        [item] = group["leaves"]
        before = market.operator.balance_wei(lease.provider.wallet_address)
        market.wallet().claim(group["batch_key"], leaf_of(item["leaf"]), item["proof"])
        assert market.operator.balance_wei(lease.provider.wallet_address) - before == int(
            item["leaf"]["amount_wei"]
        )

        chain.settlement_reconcile(now=NOW, client=market.operator)
        assert api.get(reverse("provider-proofs")).json()["count"] == 0
        claimed = api.get(reverse("provider-proofs"), {"include_claimed": "true", "batch": batch.pk}).json()
        assert claimed["results"][0]["leaves"][0]["claimed"] is True

    def test_the_multiproof_claims_all_of_a_providers_leaves_at_once(self, market):
        consumer = market.consumer()
        first = market.completed_lease(consumer)
        from tests.factories import ResourceFactory

        market.completed_lease(consumer, resource=ResourceFactory(provider=first.provider))
        market.submit(market.batch())

        [group] = bearer_client(first.provider.user).get(reverse("provider-proofs")).json()["results"]

        multi = group["multiproof"]
        assert len(multi["leaves"]) == 2
        receipt = market.operator.claim_many(
            group["batch_key"], [leaf_of(x) for x in multi["leaves"]], multi["proof"], multi["flags"]
        )
        assert receipt["gas_used"] > 0

    def test_another_providers_leaves_are_not_shown(self, market):
        confirmed(market)
        other = ProviderFactory()
        assert bearer_client(other.user).get(reverse("provider-proofs")).json()["count"] == 0

    @pytest.mark.parametrize(
        "params", [{"batch": "abc"}, {"batch": "0"}, {"include_claimed": "perhaps"}, {"page": "2"}]
    )
    def test_bad_query_parameters_are_refused(self, params):
        api = bearer_client(ProviderFactory().user)
        assert_error(api.get(reverse("provider-proofs"), params), 400, "invalid")

    def test_only_providers_fetch_proofs(self):
        assert_error(
            bearer_client(ConsumerFactory()).get(reverse("provider-proofs")), 403, "permission_denied"
        )


class TestConsumer:
    def test_registers_its_wallet_once_and_refuses_bad_or_taken_addresses(self, market):
        user = ConsumerFactory()
        api = bearer_client(user)
        address = market.wallet().address

        assert_error(api.get(reverse("consumer-wallet")), 404, "not_found")
        assert (
            api.put(reverse("consumer-wallet"), {"address": address}, format="json").json()["address"]
            == address
        )
        assert api.get(reverse("consumer-wallet")).json()["address"] == address
        assert_error(
            api.put(reverse("consumer-wallet"), {"address": "0xnope"}, format="json"), 400, "invalid"
        )
        assert_error(api.put(reverse("consumer-wallet"), {}, format="json"), 400, "invalid")
        other = bearer_client(ConsumerFactory())
        assert_error(
            other.put(reverse("consumer-wallet"), {"address": address}, format="json"), 409, "wallet_taken"
        )
        assert_error(
            bearer_client(ProviderFactory().user).get(reverse("consumer-wallet")), 403, "permission_denied"
        )

    def test_its_job_leases_show_the_settlement_tx_hash_and_reconciliation(self, market):
        lease, batch = confirmed(market)
        api = bearer_client(lease.job.consumer)

        [row] = api.get(reverse("job-leases", args=[lease.job_id])).json()

        assert row["settlement_on_chain"] == {
            "batch": batch.pk,
            "batch_key": batch.batch_key,
            "batch_status": "CONFIRMED",
            "tx_hash": batch.tx_hash,
            "reconciliation": "MATCHED",
            "provider_claimed": False,
        }

    def test_a_lease_not_yet_batched_has_no_chain_status(self, market):
        lease = market.completed_lease()
        [row] = bearer_client(lease.job.consumer).get(reverse("job-leases", args=[lease.job_id])).json()
        assert row["settlement_on_chain"] is None


class TestOrders:
    """EIP-712 order intake (issue 11): the consumer signs the server's draft; the path is shown."""

    def _consumer_with_job(self, *, wallet: bool):
        from decimal import Decimal

        from eth_account import Account

        from tests.factories import job_submit

        user = ConsumerFactory(balance=Decimal("100"))
        account = Account.create()
        if wallet:
            chain.consumer_wallet_register(user=user, address=account.address, now=NOW)
        job = job_submit(consumer=user, budget=Decimal("10"))
        return user, account, job

    def _signed(self, draft: dict, key) -> dict:
        from eth_account import Account

        signed = Account.sign_typed_data(key, full_message=draft["typed_data"])
        message = draft["typed_data"]["message"]
        return {
            "nonce": message["nonce"],
            "deadline": message["deadline"],
            "max_amount_wei": str(message["maxAmount"]),
            "cumulative_max_wei": str(message["cumulativeMax"]),
            "signature": "0x" + bytes(signed.signature).hex(),
        }

    def test_a_signed_order_is_verified_stored_and_puts_the_job_on_chain(self):
        user, account, job = self._consumer_with_job(wallet=True)
        api = bearer_client(user)
        url = reverse("job-order", args=[job.pk])
        draft = api.get(url).json()
        assert draft["path"] == "awaiting-order"
        assert draft["typed_data"]["domain"]["name"] == "CPX Settlement"
        assert int(draft["typed_data"]["message"]["maxAmount"]) == chain.to_wei(job.budget)

        body = api.post(url, self._signed(draft, account.key), format="json")

        assert body.status_code == 201, body.json()
        assert body.json()["path"] == "on-chain" and body.json()["order"]["nonce"] == 1
        assert api.get(url).json()["path"] == "on-chain"
        assert_error(
            api.post(url, self._signed(draft, account.key), format="json"), 409, "settlement_order_exists"
        )

    def test_an_order_signed_by_another_key_or_altered_is_refused_and_nothing_is_stored(self):
        from eth_account import Account

        from contracts.models import SettlementOrder

        user, account, job = self._consumer_with_job(wallet=True)
        api = bearer_client(user)
        url = reverse("job-order", args=[job.pk])
        draft = api.get(url).json()
        forged = self._signed(draft, Account.create().key)
        assert_error(api.post(url, forged, format="json"), 400, "settlement_order_invalid")
        bigger = {**self._signed(draft, account.key), "max_amount_wei": "1" + "0" * 30}
        assert_error(api.post(url, bigger, format="json"), 400, "settlement_order_invalid")
        assert_error(api.post(url, {"signature": "0x12"}, format="json"), 400, "invalid")
        assert not SettlementOrder.objects.exists()

    def test_a_consumer_without_a_wallet_stays_on_the_ledger(self):
        user, account, job = self._consumer_with_job(wallet=False)
        api = bearer_client(user)
        body = api.get(reverse("job-order", args=[job.pk])).json()
        assert body == {"job": job.pk, "path": "ledger", "typed_data": None}
        other = bearer_client(ConsumerFactory())
        assert_error(other.get(reverse("job-order", args=[job.pk])), 404, "not_found")

"""The settlement dashboard (/ops/settlements/): batches with status, tx hash and gas, the reconciliation
view per lease with differences highlighted, retrying a failed batch (POST, CSRF, operators only)."""

import pytest
from django.test import Client
from django.urls import reverse

from contracts import services as chain
from contracts.models import SettlementBatch
from market.models import LedgerTransfer
from tests.conftest import NOW
from tests.factories import ConsumerFactory, OperatorFactory, ProviderUserFactory
from tests.integration import test_settlement_chain as chain_tests
from tests.integration.pages import signed_in

pytestmark = pytest.mark.django_db
# The chain fixtures (in-process EVM, and anvil with CPX_ANVIL_URL) of the integration tests.
operator = chain_tests.operator
market = chain_tests.market


@pytest.fixture
def ops():
    return signed_in(OperatorFactory())


def settled(market, count=1):
    consumer = market.consumer()
    for _ in range(count):
        market.completed_lease(consumer)
    batch = market.submit(market.batch())
    chain.settlement_reconcile(now=NOW, client=market.operator)
    return batch


class TestDashboard:
    def test_shows_batches_with_status_tx_hash_gas_and_the_gas_chart(self, market, ops):
        batch = settled(market, 2)
        market.completed_lease()
        market.batch()

        body = ops.get(reverse("ops:settlements")).content.decode()

        assert "<h1>Settlements</h1>" in body and "soon" not in body.split("<main")[1]
        assert batch.tx_hash[:18] in body and str(batch.gas_used) in body
        assert body.count('<span class="badge ok">Confirmed</span>') == 1
        assert '<span class="badge warn">Pending</span>' in body
        assert '<svg class="chart"' in body
        assert reverse("ops:settlement-detail", args=[batch.pk]) in body
        assert 'id="leases-matched">2 / 3<' in body

    def test_filters_by_status_and_ignores_an_unknown_one(self, market, ops):
        batch = settled(market)
        pending = body = ops.get(reverse("ops:settlements"), {"status": "PENDING"}).content.decode()
        assert "No settlement batch with status pending" in pending
        body = ops.get(reverse("ops:settlements"), {"status": "<script>"}).content.decode()
        assert f">#{batch.pk}<" in body and "<script>" not in body.split("<main")[1]

    def test_an_empty_exchange_says_what_will_appear(self, ops):
        body = ops.get(reverse("ops:settlements")).content.decode()
        assert "No settlement batch yet" in body and "No data yet" in body

    @pytest.mark.parametrize("factory", [ConsumerFactory, ProviderUserFactory])
    def test_is_for_operators_only(self, factory):
        client = signed_in(factory())
        assert client.get(reverse("ops:settlements")).status_code == 403
        assert client.get(reverse("ops:settlement-detail", args=[1])).status_code == 403
        assert client.post(reverse("ops:settlement-retry", args=[1])).status_code == 403
        assert Client().get(reverse("ops:settlements")).status_code == 302  # to the login page

    def test_reads_a_fixed_number_of_queries_at_two_sizes(
        self,
        market,
        ops,
        django_assert_max_num_queries,
    ):
        settled(market, 1)
        with django_assert_max_num_queries(14) as small:
            assert ops.get(reverse("ops:settlements")).status_code == 200
        for _ in range(3):
            settled(market, 3)
        with django_assert_max_num_queries(len(small.captured_queries)):
            assert ops.get(reverse("ops:settlements")).status_code == 200


class TestBatchPage:
    def test_shows_the_ledger_beside_the_chain_per_lease_and_highlights_a_difference(
        self,
        market,
        ops,
    ):
        batch = settled(market, 2)
        first = batch.settled_leases.order_by("lease_id").first()
        body = ops.get(reverse("ops:settlement-detail", args=[batch.pk])).content.decode()
        assert batch.batch_key in body and batch.tx_hash in body and batch.merkle_root in body
        assert body.count('<span class="badge ok">Ledger and chain agree</span>') == 2
        assert "mismatch" not in body.split('id="reconciliation"')[1]

        LedgerTransfer.objects.filter(reference=f"lease:{first.lease_id}:payment").update(amount="0.000001")
        chain.settlement_reconcile(now=NOW, client=market.operator)
        body = ops.get(reverse("ops:settlement-detail", args=[batch.pk])).content.decode()

        table = body.split('id="reconciliation"')[1]
        assert '<span class="badge bad">Ledger and chain amounts differ</span>' in table
        assert table.count('class="num mismatch"') == 2  # the ledger payment and the chain's, side by side
        assert "0.000001" in table

    def test_an_unknown_batch_is_404(self, ops):
        assert ops.get(reverse("ops:settlement-detail", args=[999])).status_code == 404


class TestRetry:
    def failed(self, market):
        market.completed_lease()
        batch = market.batch()
        SettlementBatch.objects.filter(pk=batch.pk).update(
            status="FAILED", error_code="InsufficientEscrow", error="escrow too low"
        )
        return batch

    def test_a_failed_batch_offers_retry_and_the_post_makes_it_pending(self, market, ops):
        batch = self.failed(market)
        page = ops.get(reverse("ops:settlement-detail", args=[batch.pk])).content.decode()
        assert "Retry this batch" in page and "InsufficientEscrow" in page and "csrfmiddlewaretoken" in page

        response = ops.post(reverse("ops:settlement-retry", args=[batch.pk]), follow=True)

        assert response.redirect_chain[-1][0] == reverse("ops:settlement-detail", args=[batch.pk])
        assert "is pending again" in response.content.decode()
        batch.refresh_from_db()
        assert batch.status == "PENDING"

    def test_a_batch_that_is_not_failed_is_refused_beside_the_page(self, market, ops):
        batch = settled(market)
        response = ops.post(reverse("ops:settlement-retry", args=[batch.pk]), follow=True)
        assert "Only a failed batch can be retried." in response.content.decode()
        assert "Retry this batch" not in response.content.decode()
        assert ops.post(reverse("ops:settlement-retry", args=[999])).status_code == 404

    def test_needs_post_and_the_csrf_token(self, market):
        batch = self.failed(market)
        client = Client(enforce_csrf_checks=True)
        client.force_login(OperatorFactory())
        assert client.get(reverse("ops:settlement-retry", args=[batch.pk])).status_code == 405
        assert client.post(reverse("ops:settlement-retry", args=[batch.pk])).status_code == 403
        batch.refresh_from_db()
        assert batch.status == "FAILED"

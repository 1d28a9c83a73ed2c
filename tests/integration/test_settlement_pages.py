"""The settlement dashboard (/ops/settlements/): batches with status, tx hash and gas, the reconciliation
view per lease with differences highlighted, retrying a failed batch (POST, CSRF, operators only); the
provider console's "Claimable on chain" panel and its proofs.json."""

import pytest
from django.test import Client
from django.urls import reverse

from contracts import services as chain
from contracts.models import SettlementBatch, SettlementLease
from market.models import LedgerTransfer
from tests.api.test_settlements_api import leaf_of
from tests.conftest import NOW, bearer_client
from tests.factories import (
    ConsumerFactory,
    OperatorFactory,
    ProviderFactory,
    ProviderUserFactory,
    ResourceFactory,
)
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


def claimable_for(market, provider, *, batches=1, leases=1):
    """`batches` confirmed batches of `leases` completed leases each, all on `provider`'s devices."""
    consumer = market.consumer()
    for _ in range(batches):
        for _ in range(leases):
            market.completed_lease(consumer, resource=ResourceFactory(provider=provider))
        market.submit(market.batch())


def claimable_panel(client) -> str:
    body = client.get(reverse("pages:provider-console")).content.decode()
    return body.split('id="claimable"')[1].split("</section>")[0]


class TestProviderClaimable:
    def test_shows_a_confirmed_batchs_unclaimed_leaf_to_its_provider_and_not_to_another(self, market):
        lease = market.completed_lease()
        other = market.completed_lease()
        batch = market.submit(market.batch())
        row = SettlementLease.objects.get(lease=lease)

        panel = claimable_panel(signed_in(lease.provider.user))
        others = claimable_panel(signed_in(other.provider.user))

        mine, theirs = (f'<td class="mono">#{x.pk}</td>' for x in (lease, other))
        assert mine in panel and theirs not in panel
        assert theirs in others and mine not in others
        assert f'id="claimable-total">{row.provider_amount}<' in panel
        assert f'id="claimable-total-wei">{int(row.provider_wei)}<' in panel
        assert f'<td class="num">{row.provider_amount}</td>' in panel
        assert batch.tx_hash in panel and lease.provider.wallet_address in panel
        assert market.operator.contract_address in panel
        assert reverse("pages:provider-proofs-json") in panel and "Proofs (JSON)" in panel
        assert "claimMany(batchId, leaves, proof, flags)" in panel

    def test_says_when_claims_appear_while_nothing_is_confirmed_or_all_is_claimed(self, market):
        lease = market.completed_lease()
        client = signed_in(lease.provider.user)
        pending = market.batch()

        assert "Claims appear here after a settlement batch is confirmed" in claimable_panel(client)

        market.submit(pending)
        assert f'<td class="mono">#{lease.pk}</td>' in claimable_panel(client)
        chain.settlement_claims_relay(batch_id=pending.pk, client=market.operator)
        chain.settlement_reconcile(now=NOW, client=market.operator)

        panel = claimable_panel(client)
        assert "Claims appear here after a settlement batch is confirmed" in panel
        assert f"#{lease.pk}" not in panel

    def test_the_proofs_json_is_the_apis_document_and_its_multiproof_claims(self, market):
        lease = market.completed_lease()
        market.submit(market.batch())
        page = signed_in(lease.provider.user).get(reverse("pages:provider-proofs-json"))

        api = bearer_client(lease.provider.user).get(reverse("provider-proofs"))

        assert page.status_code == 200 and page["Content-Type"] == "application/json"
        assert page.json() == api.json()
        [group] = page.json()["results"]
        assert [item["lease"] for item in group["leaves"]] == [lease.pk]
        multi = group["multiproof"]
        before = market.operator.balance_wei(lease.provider.wallet_address)
        market.wallet().claim_many(
            group["batch_key"], [leaf_of(x) for x in multi["leaves"]], multi["proof"], multi["flags"]
        )
        paid = market.operator.balance_wei(lease.provider.wallet_address) - before
        assert paid == int(group["leaves"][0]["leaf"]["amount_wei"]) > 0

    def test_the_proofs_json_is_for_providers_only(self):
        url = reverse("pages:provider-proofs-json")

        assert signed_in(ConsumerFactory()).get(url).status_code == 403
        assert signed_in(OperatorFactory()).get(url).status_code == 403
        assert signed_in(ProviderUserFactory()).get(url).status_code == 404  # no profile yet
        assert Client().get(url).status_code == 302  # to the login page

    def test_the_console_and_the_proofs_read_a_fixed_number_of_queries_at_two_sizes(
        self,
        market,
        django_assert_max_num_queries,
    ):
        provider = ProviderFactory()
        client = signed_in(provider.user)
        claimable_for(market, provider)
        with django_assert_max_num_queries(10) as console:
            assert client.get(reverse("pages:provider-console")).status_code == 200
        with django_assert_max_num_queries(5) as proofs:
            assert client.get(reverse("pages:provider-proofs-json")).json()["count"] == 1

        claimable_for(market, provider, batches=3, leases=3)

        with django_assert_max_num_queries(len(console.captured_queries)):
            panel = claimable_panel(client)
        with django_assert_max_num_queries(len(proofs.captured_queries)):
            assert client.get(reverse("pages:provider-proofs-json")).json()["count"] == 4
        assert panel.count('<td class="mono">#') == 10

"""Operator pages: the market dashboard (charts with tables and CSV, book depth, provider health),
rounds, a round's detail and its replay, the settlements placeholder; staff only; query counts."""

import csv
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from auctions.models import Round
from auctions.services.rounds import round_clear, round_open
from tests.factories import ConsumerFactory, OperatorFactory, ResourceFactory
from tests.integration.pages import (
    CLASSES,
    cleared_round_with_a_lease,
    live_job,
    online_provider,
    signed_in,
    synthetic_rounds,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    return signed_in(OperatorFactory())


class TestMarketDashboard:
    def test_draws_each_series_as_svg_with_its_numbers_and_a_csv_link(self, operator):
        rounds = synthetic_rounds(12)

        body = operator.get(reverse("ops:market")).content.decode()

        assert body.count('<svg class="chart"') == 5
        for series in ("prices", "volume", "welfare", "gap", "clear-time"):
            assert f'href="/ops/market/{series}.csv?rounds=200"' in body
        assert f'<a href="/ops/rounds/{rounds[-1].pk}/">{rounds[-1].pk}</a>' in body  # the numbers table
        assert CLASSES[0] in body and "12 rounds: 12 cleared" in body

    def test_the_window_chooses_how_many_rounds_are_charted(self, operator):
        synthetic_rounds(30)

        body = operator.get(reverse("ops:market") + "?rounds=10").content.decode()

        assert "Charts show the last 10 finished rounds" in body

    def test_an_empty_market_says_what_to_do_next(self, operator):
        body = operator.get(reverse("ops:market")).content.decode()

        assert "No round yet" in body and "charts appear once rounds have cleared" in body
        assert "No provider has registered yet" in body

    def test_shows_book_depth_and_provider_health(self, operator):
        provider = online_provider(region="eu-west")
        ResourceFactory(provider=provider, price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.2"))
        live_job(
            ConsumerFactory(balance=Decimal("50")), max_price_per_device_hour=Decimal("0.9"), quant_bits=4
        )

        body = operator.get(reverse("ops:market-live")).content.decode()

        assert 'hx-trigger="every 2s"' in body
        row = body.split('<td class="mono">GPU/24G/eu-west</td>')[1].split("</tr>")[0]
        assert "0.9000" in row and "0.2000" in row and "yes" in row
        assert provider.display_name in body and "online" in body

    def test_prices_csv_has_a_row_per_round_and_class(self, operator):
        rounds = synthetic_rounds(4)

        response = operator.get(reverse("ops:market-csv", args=["prices"]))

        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert response["Content-Type"].startswith("text/csv")
        assert rows[0] == ["round", "cleared_at", "resource_class", "buyer_price", "seller_price", "traded"]
        assert len(rows) == 1 + 4 * len(CLASSES)
        assert rows[1][0] == str(rounds[0].pk)

    def test_the_clear_time_csv_sums_the_timings(self, operator):
        synthetic_rounds(1)

        response = operator.get(reverse("ops:market-csv", args=["clear-time"]))

        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert rows[0] == ["round", "cleared_at", "status", "clear_ms"]
        assert float(rows[1][3]) == pytest.approx(1.5 + 2.0 + 0.7)

    def test_an_unknown_series_is_not_found(self, operator):
        assert operator.get("/ops/market/secrets.csv").status_code == 404

    @pytest.mark.parametrize("size", [5, 60])
    def test_the_dashboard_costs_the_same_queries_at_any_size(
        self, size, operator, django_assert_max_num_queries
    ):
        synthetic_rounds(size)
        for _ in range(size // 5):
            ResourceFactory(provider=online_provider(), price_floor=Decimal("0"))
        consumer = ConsumerFactory(balance=Decimal("1000"))
        for _ in range(size // 5):
            live_job(consumer, budget=Decimal("1"), quant_bits=4)

        # +1 each for the brokers' panel (issue 12: one query).
        with django_assert_max_num_queries(11):
            response = operator.get(reverse("ops:market"))
        with django_assert_max_num_queries(9):
            live = operator.get(reverse("ops:market-live"))

        assert response.status_code == 200 and live.status_code == 200

    @pytest.mark.parametrize("size", [3, 80])
    def test_the_round_list_costs_the_same_queries_at_any_size(
        self, size, operator, django_assert_max_num_queries
    ):
        synthetic_rounds(size)

        with django_assert_max_num_queries(4):
            response = operator.get(reverse("ops:round-list"))

        assert response.status_code == 200


class TestRoundDetail:
    def test_shows_hashes_mechanism_and_allocations(self, operator):
        round_obj, job, resource = cleared_round_with_a_lease()

        body = operator.get(reverse("ops:round-detail", args=[round_obj.pk])).content.decode()

        assert round_obj.snapshot_sha256 in body and round_obj.result_sha256 in body
        assert f"#{job.pk} {job.model_name}" in body and resource.provider.display_name in body
        assert "mcafee" in body

    def test_replay_reruns_the_round_and_shows_the_hashes_matching(self, operator):
        round_obj, _, _ = cleared_round_with_a_lease()

        body = operator.post(reverse("ops:round-replay", args=[round_obj.pk])).content.decode()

        assert "Replay matches" in body
        assert body.count(round_obj.result_sha256) >= 3  # stored, recomputed, and the page's own

    def test_replay_through_htmx_answers_the_report_only(self, operator):
        round_obj, _, _ = cleared_round_with_a_lease()

        response = operator.post(
            reverse("ops:round-replay", args=[round_obj.pk]), headers={"HX-Request": "true"}
        )

        body = response.content.decode()
        assert 'id="replay-report"' in body and "<html" not in body

    def test_a_tampered_result_does_not_match(self, operator):
        round_obj, _, _ = cleared_round_with_a_lease()
        Round.objects.filter(pk=round_obj.pk).update(result_sha256="0" * 64)

        body = operator.post(reverse("ops:round-replay", args=[round_obj.pk])).content.decode()

        assert "Replay does not match" in body

    def test_replay_is_a_post_with_the_csrf_token(self):
        round_obj, _, _ = cleared_round_with_a_lease()
        client = Client(enforce_csrf_checks=True)
        client.force_login(OperatorFactory())

        assert client.get(reverse("ops:round-replay", args=[round_obj.pk])).status_code == 405
        assert client.post(reverse("ops:round-replay", args=[round_obj.pk])).status_code == 403

    def test_an_unknown_round_is_not_found(self, operator):
        assert operator.get(reverse("ops:round-detail", args=[999999])).status_code == 404
        assert operator.post(reverse("ops:round-replay", args=[999999])).status_code == 404

    @pytest.mark.parametrize("size", [1, 6])
    def test_costs_the_same_queries_at_any_number_of_allocations(
        self, size, operator, django_assert_max_num_queries
    ):
        provider = online_provider()
        ResourceFactory(
            provider=provider, price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.1"), device_count=8
        )
        consumer = ConsumerFactory(balance=Decimal("1000"))
        for _ in range(size):
            live_job(consumer, max_price_per_device_hour=Decimal("2"), quant_bits=4)
        round_obj = round_clear(round_id=round_open(now=timezone.now()).pk, now=timezone.now())
        assert round_obj.jobs_matched >= size - 1  # McAfee may give up the last trade

        with django_assert_max_num_queries(6):
            response = operator.get(reverse("ops:round-detail", args=[round_obj.pk]))

        assert response.status_code == 200


class TestSettlementsNavigation:
    # The dashboard itself (issue 5) is tested in tests/integration/test_settlement_pages.py.
    def test_is_in_the_operator_navigation(self, operator):
        market = operator.get(reverse("ops:market")).content.decode()
        body = operator.get(reverse("ops:settlements")).content.decode()

        assert 'href="/ops/settlements/"' in market
        assert "<h1>Settlements</h1>" in body

"""The public market page (no login) and a round's page with downloads and replay (any signed-in user)."""

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import ConsumerFactory, ProviderFactory, ResourceFactory
from tests.integration.pages import cleared_round_with_a_lease, online_provider, signed_in

pytestmark = pytest.mark.django_db


class TestPublicMarketPage:
    def test_shows_offers_and_the_unit_without_login(self):
        ResourceFactory(
            provider=online_provider(region="ap-south", display_name="Hidden Name"),
            ask_per_device_hour=Decimal("0.60"),
            speed_factor=Decimal("1.5"),
            price_floor=Decimal(0),
        )

        response = Client().get(reverse("public:market"))

        body = response.content.decode()
        assert response.status_code == 200
        assert "USDC per reference device-hour" in body
        assert 'data-class="GPU/24G/ap-south"' in body
        assert "0.4000" in body  # 0.60 per device-hour on a 1.5x device
        assert "Hidden Name" not in body
        assert "Sign up to trade" in body

    def test_lists_recent_clearing_prices_and_links_rounds_for_a_signed_in_user(self):
        round_obj, job, _ = cleared_round_with_a_lease()

        body = signed_in(job.consumer).get(reverse("public:market")).content.decode()

        assert "Recent clearing prices" in body and "GPU/24G/eu-west" in body
        assert reverse("public:round", args=[round_obj.pk]) in body

    def test_every_page_links_the_market(self):
        body = Client().get(reverse("pages:login")).content.decode()

        assert f'href="{reverse("public:market")}"' in body


class TestRoundPage:
    @pytest.mark.parametrize("role", ["consumer", "provider"])
    def test_any_signed_in_user_sees_downloads_and_replays_a_match(self, role):
        round_obj, _, _ = cleared_round_with_a_lease()
        user = ConsumerFactory() if role == "consumer" else ProviderFactory().user
        client = signed_in(user)

        page = client.get(reverse("public:round", args=[round_obj.pk])).content.decode()
        replay = client.post(reverse("public:round-replay", args=[round_obj.pk]), HTTP_HX_REQUEST="true")

        assert f"/api/v1/rounds/{round_obj.pk}/snapshot" in page and round_obj.snapshot_sha256 in page
        assert "Replay matches" in replay.content.decode()

    def test_asks_an_anonymous_visitor_to_log_in(self):
        round_obj, _, _ = cleared_round_with_a_lease()

        response = Client().get(reverse("public:round", args=[round_obj.pk]))

        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

    def test_an_unknown_round_is_404(self):
        assert signed_in(ConsumerFactory()).get(reverse("public:round", args=[9999])).status_code == 404

"""The provider console: profile, listings with inline errors and the recommended ask, agents' state,
leases, permission checks and query counts."""

from decimal import Decimal

import pytest
from django.urls import reverse

from auctions.models import Lease
from market.models import Provider, Resource
from tests.factories import ConsumerFactory, ProviderFactory, ProviderUserFactory, ResourceFactory
from tests.integration.pages import (
    lease_for,
    live_job,
    online_provider,
    quote_for,
    signed_in,
    synthetic_rounds,
)

pytestmark = pytest.mark.django_db

GOOD_RESOURCE = {
    "device_class": "GPU",
    "model_name": "RTX 3080",
    "device_count": "2",
    "memory_per_device_gib": "10",
    "host_ram_gib": "32",
    "vcpu": "8",
    "fp16_tflops": "29.77",
    "interconnect": "PCIe4",
    "ask_per_device_hour": "0.25",
    "price_floor": "0.10",
}


class TestProfile:
    def test_the_console_sends_a_provider_without_a_profile_to_register_one(self):
        response = signed_in(ProviderUserFactory()).get(reverse("pages:provider-console"))

        assert response.status_code == 302
        assert response.url == reverse("pages:provider-profile")

    def test_registers_a_profile_with_a_checked_wallet(self):
        user = ProviderUserFactory()

        response = signed_in(user).post(
            reverse("pages:provider-profile"),
            {"display_name": "Rig", "wallet_address": "0x" + "ab" * 20, "region": "eu-west", "tier": "END"},
        )

        provider = Provider.objects.get(user=user)
        assert response.status_code == 302
        assert (
            provider.wallet_address == "0x" + "Ab" * 20 or provider.wallet_address.lower() == "0x" + "ab" * 20
        )
        assert provider.tier == "END"

    def test_a_bad_wallet_is_an_error_beside_its_field(self):
        user = ProviderUserFactory()

        response = signed_in(user).post(
            reverse("pages:provider-profile"),
            {"display_name": "Rig", "wallet_address": "0xnot-an-address", "region": "eu-west"},
        )

        body = response.content.decode()
        assert response.status_code == 400
        assert 'id="id_wallet_address_error"' in body and "Not an Ethereum address" in body
        assert 'aria-invalid="true"' in body
        assert not Provider.objects.filter(user=user).exists()


class TestResources:
    def test_lists_a_device_through_the_service(self):
        provider = ProviderFactory()

        response = signed_in(provider.user).post(reverse("pages:resource-new"), GOOD_RESOURCE)

        resource = Resource.objects.get(provider=provider)
        assert response.status_code == 302
        assert (resource.model_name, resource.device_count, resource.ask_per_device_hour) == (
            "RTX 3080",
            2,
            Decimal("0.25"),
        )

    @pytest.mark.parametrize(
        ("change", "field", "message"),
        [
            ({"device_count": "0"}, "device_count", "greater than or equal to 1"),
            ({"memory_per_device_gib": "abc"}, "memory_per_device_gib", "A valid number is required"),
            ({"model_name": ""}, "model_name", "This field is required"),
            ({"device_class": "QPU"}, "device_class", "is not a valid choice"),
            ({"ask_per_device_hour": "0.05"}, "ask_per_device_hour", "cannot be below the price floor"),
            (
                {"available_from": "2027-01-02T00:00", "available_until": "2027-01-01T00:00"},
                "available_until",
                "ends before it starts",
            ),
        ],
    )
    def test_bad_input_is_refused_with_the_message_beside_the_field(self, change, field, message):
        provider = ProviderFactory()

        response = signed_in(provider.user).post(reverse("pages:resource-new"), {**GOOD_RESOURCE, **change})

        body = response.content.decode()
        assert response.status_code == 400
        error = body.split(f'id="id_{field}_error">')[1].split("</p>")[0]
        assert message in error
        assert f'aria-describedby="id_{field}' in body
        assert not Resource.objects.filter(provider=provider).exists()

    def test_edits_its_own_listing_and_pauses_it(self):
        resource = ResourceFactory()

        response = signed_in(resource.provider.user).post(
            reverse("pages:resource-edit", args=[resource.pk]),
            {**GOOD_RESOURCE, "ask_per_device_hour": "0.55", "status": "PAUSED"},
        )

        resource.refresh_from_db()
        assert response.status_code == 302
        assert (resource.ask_per_device_hour, resource.status) == (Decimal("0.55"), "PAUSED")

    def test_cannot_open_or_change_another_providers_listing(self):
        theirs = ResourceFactory()
        me = ProviderFactory()
        client = signed_in(me.user)

        opened = client.get(reverse("pages:resource-edit", args=[theirs.pk]))
        changed = client.post(reverse("pages:resource-edit", args=[theirs.pk]), {"ask_per_device_hour": "9"})

        theirs.refresh_from_db()
        assert (opened.status_code, changed.status_code) == (404, 404)
        assert theirs.ask_per_device_hour == Decimal("0.4")

    def test_the_edit_form_shows_the_current_values(self):
        resource = ResourceFactory(model_name="RTX 4090 Ti")

        body = (
            signed_in(resource.provider.user).get(reverse("pages:resource-edit", args=[resource.pk])).content
        )

        assert b'value="RTX 4090 Ti"' in body


class TestConsole:
    def test_shows_the_recommended_ask_beside_its_own_with_expected_utilisation(self):
        provider = online_provider(region="eu-west")
        ResourceFactory(
            provider=provider, memory_per_device_gib=Decimal("24"), ask_per_device_hour=Decimal("0.4")
        )
        quote_for("GPU/24G/eu-west", ask="0.3550", utilisation=0.62)

        body = signed_in(provider.user).get(reverse("pages:provider-console")).content.decode()

        assert "GPU/24G/eu-west" in body
        assert "0.4000" in body and "0.3550" in body and "62 %" in body
        assert "agent online" in body

    def test_an_agent_that_never_heartbeat_is_offline_and_the_page_says_how_to_start_it(self):
        provider = ProviderFactory()

        body = signed_in(provider.user).get(reverse("pages:provider-console")).content.decode()

        assert "agent offline" in body and "python -m workers.agent" in body
        assert "Nothing listed yet" in body

    def test_leases_show_usage_and_close_reasons(self):
        resource = ResourceFactory()
        job = live_job(ConsumerFactory(balance=Decimal("100")))
        (round_obj,) = synthetic_rounds(1)
        lease_for(
            job,
            resource,
            round_obj,
            status=Lease.Status.REASSIGNED,
            close_reason=Lease.CloseReason.UNSTABLE,
            close_detail="no heartbeat for 61 s",
            device_seconds=Decimal("42"),
        )
        client = signed_in(resource.provider.user)

        console = client.get(reverse("pages:provider-console")).content.decode()
        leases = client.get(reverse("pages:provider-leases")).content.decode()

        for body in (console, leases):
            assert "Provider missed heartbeats" in body and "no heartbeat for 61 s" in body and ">42<" in body

    def test_the_live_part_polls_every_two_seconds(self):
        provider = ProviderFactory()

        body = signed_in(provider.user).get(reverse("pages:provider-live")).content.decode()

        assert 'hx-trigger="every 2s"' in body and 'id="provider-live"' in body

    @pytest.mark.parametrize("size", [1, 8])
    def test_the_console_costs_the_same_queries_at_any_size(self, size, django_assert_max_num_queries):
        provider = online_provider()
        consumer = ConsumerFactory(balance=Decimal("1000"))
        rounds = synthetic_rounds(1)
        for _ in range(size):
            resource = ResourceFactory(provider=provider)
            quote_for("GPU/24G/eu-west")
            lease_for(live_job(consumer), resource, rounds[0])
            lease_for(
                live_job(consumer),
                resource,
                rounds[0],
                status=Lease.Status.COMPLETED,
                close_reason="COMPLETED",
            )
        client = signed_in(provider.user)

        with django_assert_max_num_queries(10):  # 9 + the claimable-on-chain panel
            response = client.get(reverse("pages:provider-console"))

        assert response.status_code == 200

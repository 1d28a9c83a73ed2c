"""One unit everywhere on the pages: prices per reference device-hour with the hardware's
per-device-hour figure beside them, the currency named, provider earnings after the fee."""

from decimal import Decimal

import pytest
from django.urls import reverse

from auctions.models import Lease
from market.models import Resource
from tests.integration.pages import cleared_round_with_a_lease, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def leased():
    """A real round's lease on a 2× device paying 0.40 per device-hour (0.20 per reference device-hour)."""
    round_obj, job, resource = cleared_round_with_a_lease()
    Resource.objects.filter(pk=resource.pk).update(speed_factor=Decimal("2"))
    Lease.objects.filter(job=job).update(unit_price_paid=Decimal("0.40"), unit_price_received=Decimal("0.40"))
    return job, resource


class TestConsumerPrices:
    def test_the_job_page_states_the_lease_price_per_reference_device_hour_beside_the_hardwares(self, leased):
        job, _ = leased

        body = signed_in(job.consumer).get(reverse("pages:job-detail", args=[job.pk])).content.decode()

        assert "USDC per reference device-hour" in body
        assert "0.2000 USDC per reference device-hour (0.4000 per device-hour of this 2× device)" in body
        assert "0.4000 / device-h (2×)" in body

    def test_the_job_form_defines_the_unit_and_names_the_currency(self, leased):
        job, _ = leased

        body = signed_in(job.consumer).get(reverse("pages:job-new")).content.decode()

        assert "Max price per reference device-hour (your bid)" in body
        assert "one hour of one speed-1 device of the class" in body
        assert "USDC" in body

    def test_the_currency_is_a_setting(self, leased, settings):
        job, _ = leased
        settings.CPX_CURRENCY = "EURC"

        body = signed_in(job.consumer).get(reverse("pages:job-detail", args=[job.pk])).content.decode()

        assert "EURC per reference device-hour" in body and "USDC" not in body


class TestProviderEarnings:
    def test_lease_earnings_are_shown_after_the_fee(self, leased, settings):
        _, resource = leased
        settings.CPX_PLATFORM_FEE_RATE = Decimal("0.05")

        body = signed_in(resource.provider.user).get(reverse("pages:provider-leases")).content.decode()

        assert "after the 5 % fee" in body
        assert "0.3800" in body  # 0.40 less 5 %
        assert "before fee 0.4000" in body

    def test_the_console_states_each_ask_per_reference_device_hour_and_after_fee(self, leased):
        _, resource = leased

        body = signed_in(resource.provider.user).get(reverse("pages:provider-console")).content.decode()

        assert "Earnings (USDC, after fee)" in body
        assert "0.1000 / ref. device-h" in body  # the 0.20 ask on a 2× device
        assert "you keep 0.1900" in body

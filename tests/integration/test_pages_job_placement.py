"""The consumer's job pages say where each job may run and where it ran, what it spent, and filter."""

from decimal import Decimal

import pytest
from django.urls import reverse

from market.models import Provider
from tests.factories import ConsumerFactory
from tests.integration.pages import cleared_round_with_a_lease, live_job, signed_in

pytestmark = pytest.mark.django_db


class TestJobListColumns:
    def test_shows_where_a_matched_job_ran_and_its_placement(self):
        _, job, resource = cleared_round_with_a_lease()
        Provider.objects.filter(pk=resource.provider_id).update(site="Porto")
        client = signed_in(job.consumer)

        body = client.get(reverse("pages:job-list")).content.decode()

        assert "Ran where" in body and "Placement" in body and "Spent" in body
        assert "eu-west · Porto" in body
        assert resource.provider.display_name in body
        assert "preferred" in body

    def test_says_not_yet_for_a_queued_job(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        live_job(consumer, latency_sla_ms=200)
        client = signed_in(consumer)

        body = client.get(reverse("pages:job-list")).content.decode()

        assert "not yet" in body
        assert "strict" in body


class TestJobListFilters:
    def test_filters_by_status_and_region_and_keeps_them_across_pages(self):
        consumer = ConsumerFactory(balance=Decimal("1000"))
        paris = live_job(consumer, region="eu-west", model_name="paris-model")
        tokyo = live_job(consumer, region="ap-east", model_name="tokyo-model")
        client = signed_in(consumer)

        body = client.get(
            reverse("pages:job-list"), {"region": "ap-east", "status": "QUEUED"}
        ).content.decode()

        assert "tokyo-model" in body and "paris-model" not in body
        assert f"#{tokyo.pk}" in body and f"#{paris.pk}<" not in body
        assert '<option value="ap-east" selected>' in body

    def test_an_unknown_filter_value_is_ignored(self):
        consumer = ConsumerFactory(balance=Decimal("1000"))
        live_job(consumer, model_name="kept-model")
        client = signed_in(consumer)

        response = client.get(reverse("pages:job-list"), {"region": "mars-1"})

        assert response.status_code == 200
        assert "kept-model" in response.content.decode()


class TestJobDetailPlacement:
    def test_shows_placement_and_where_it_ran(self):
        _, job, resource = cleared_round_with_a_lease()
        client = signed_in(job.consumer)

        body = client.get(reverse("pages:job-detail", args=[job.pk])).content.decode()

        assert "its region first, any region otherwise" in body
        assert f"— {resource.provider.display_name}" in body


def _has_waiting_reason() -> bool:
    from market.models import JobRequest

    return any(field.name == "waiting_reason" for field in JobRequest._meta.get_fields())


@pytest.mark.skipif(not _has_waiting_reason(), reason="JobRequest.waiting_reason arrives with i14-liquidity")
class TestWaitingReason:
    def test_the_list_and_the_job_page_say_why_a_queued_job_waits(self):
        from market.models import JobRequest

        consumer = ConsumerFactory(balance=Decimal("100"))
        job = live_job(consumer)
        reason = {"code": "bid_below_price", "message": "Your bid is 0.10 below the class price.", "round": 7}
        JobRequest.objects.filter(pk=job.pk).update(waiting_reason=reason)
        client = signed_in(consumer)

        listing = client.get(reverse("pages:job-list")).content.decode()
        detail = client.get(reverse("pages:job-detail", args=[job.pk])).content.decode()

        assert "Your bid is 0.10 below the class price." in listing
        assert "Why it waits:</strong> Your bid is 0.10 below the class price." in detail

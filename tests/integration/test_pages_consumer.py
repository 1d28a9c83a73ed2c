"""Consumer pages: the job form (the API's validation, the quote before submitting), job list and
detail with the live timeline, cancel, balance and ledger, the low-balance warning, query counts."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from auctions.models import Lease
from market.models import JobRequest, LedgerAccount
from tests.factories import ConsumerFactory, ProviderUserFactory, ResourceFactory
from tests.integration.pages import (
    cleared_round_with_a_lease,
    lease_for,
    live_job,
    online_provider,
    signed_in,
    synthetic_rounds,
)

pytestmark = pytest.mark.django_db


def job_form(**overrides) -> dict:
    form = {
        "kind": "INFERENCE",
        "model_name": "llama-3.1-8b-instruct",
        "params_billion": "8",
        "quant_bits": "4",
        "context_length": "4096",
        "batch_size": "1",
        "workload_tokens": "100000",
        "device_class": "GPU",
        "region": "eu-west",
        "max_price_per_device_hour": "1.50",
        "budget": "10",
        "deadline": (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        "idempotency_key": "form-key-1",
    }
    form.update(overrides)
    return {name: value for name, value in form.items() if value is not None}


class TestSubmit:
    def test_the_form_renders_with_its_quote_panel_and_a_fresh_idempotency_key(self):
        client = signed_in(ConsumerFactory(balance=Decimal("50")))

        body = client.get(reverse("pages:job-new")).content.decode()

        assert 'hx-post="/jobs/quote/"' in body and 'id="quote-body"' in body
        assert 'name="idempotency_key"' in body
        assert (
            '<label for="id_model_name">Model <span class="req" aria-hidden="true">*</span></label>' in body
        )

    def test_submits_a_job_holds_its_budget_and_opens_its_page(self):
        consumer = ConsumerFactory(balance=Decimal("50"))

        response = signed_in(consumer).post(reverse("pages:job-new"), job_form())

        job = JobRequest.objects.get(consumer=consumer)
        assert response.status_code == 302 and response.url == reverse("pages:job-detail", args=[job.pk])
        assert (job.status, job.budget, job.idempotency_key) == ("QUEUED", Decimal("10"), "form-key-1")
        assert LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance == Decimal("40")

    def test_a_job_asks_for_a_standby_in_the_backup_pool_with_a_checkbox(self):
        consumer = ConsumerFactory(balance=Decimal("50"))
        client = signed_in(consumer)

        body = client.get(reverse("pages:job-new")).content.decode()
        client.post(reverse("pages:job-new"), job_form(standby="on"))
        client.post(reverse("pages:job-new"), job_form(idempotency_key="form-key-2"))

        assert 'name="standby"' in body
        jobs = JobRequest.objects.filter(consumer=consumer).order_by("id")
        assert [job.standby for job in jobs] == [True, False]

    def test_a_resubmitted_form_is_one_job(self):
        consumer = ConsumerFactory(balance=Decimal("50"))
        client = signed_in(consumer)

        first = client.post(reverse("pages:job-new"), job_form())
        second = client.post(reverse("pages:job-new"), job_form())

        assert first.url == second.url
        assert JobRequest.objects.filter(consumer=consumer).count() == 1

    @pytest.mark.parametrize(
        ("change", "field", "message"),
        [
            ({"model_name": None}, "model_name", "This field is required"),
            ({"quant_bits": "7"}, "quant_bits", "is not a valid choice"),
            ({"params_billion": "-1"}, "params_billion", "greater than or equal to"),
            ({"budget": "lots"}, "budget", "A valid number is required"),
            ({"deadline": "yesterday"}, "deadline", "Datetime has wrong format"),
            ({"workload_tokens": None}, "workload_tokens", "An inference job states workload_tokens"),
            ({"deadline": "2020-01-01T00:00"}, "deadline", "The deadline has passed"),
        ],
    )
    def test_bad_input_is_refused_beside_its_field_and_nothing_is_written(self, change, field, message):
        consumer = ConsumerFactory(balance=Decimal("50"))

        response = signed_in(consumer).post(reverse("pages:job-new"), job_form(**change))

        body = response.content.decode()
        assert response.status_code == 400
        assert message in body.split(f'id="id_{field}_error">')[1].split("</p>")[0]
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_without_enough_balance_the_form_says_so(self):
        consumer = ConsumerFactory(balance=Decimal("5"))

        response = signed_in(consumer).post(reverse("pages:job-new"), job_form(budget="10"))

        assert response.status_code == 400
        assert "does not hold enough money" in response.content.decode()
        assert not JobRequest.objects.filter(consumer=consumer).exists()


class TestQuote:
    def test_quotes_a_price_when_a_fitting_device_is_free(self):
        ResourceFactory(
            provider=online_provider(), price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.2")
        )
        client = signed_in(ConsumerFactory(balance=Decimal("50")))

        body = client.post(reverse("pages:job-quote"), job_form()).content.decode()

        assert "would clear now" in body and "GPU/24G/eu-west" in body

    def test_says_why_it_would_not_clear_and_what_would(self):
        client = signed_in(ConsumerFactory(balance=Decimal("50")))

        body = client.post(reverse("pages:job-quote"), job_form()).content.decode()

        assert "would not clear now" in body
        assert (
            "memory exceeds every resource" in body and "No resource of this device class is listed" in body
        )

    def test_an_incomplete_form_asks_for_the_missing_fields(self):
        client = signed_in(ConsumerFactory())

        response = client.post(reverse("pages:job-quote"), {"kind": "INFERENCE"})

        assert response.status_code == 200
        assert "Complete the form for a quote" in response.content.decode()

    def test_a_rule_across_fields_is_shown_not_raised(self):
        client = signed_in(ConsumerFactory())

        body = client.post(reverse("pages:job-quote"), job_form(deadline="2020-01-01T00:00")).content.decode()

        assert "The deadline has passed" in body


class TestJobPages:
    def test_the_detail_shows_the_timeline_usage_cost_and_lease_reasons(self):
        round_obj, job, resource = cleared_round_with_a_lease()
        lease = Lease.objects.get(job=job)
        Lease.objects.filter(pk=lease.pk).update(
            status=Lease.Status.REASSIGNED,
            close_reason=Lease.CloseReason.UNSTABLE,
            close_detail="agent went silent",
            ended_at=timezone.now(),
        )

        body = signed_in(job.consumer).get(reverse("pages:job-detail", args=[job.pk])).content.decode()

        assert "Submitted" in body and "Matched" in body and "Reassigned" in body
        assert "Provider missed heartbeats: agent went silent" in body
        assert f"round {round_obj.pk}" in body
        assert 'hx-trigger="every 2s"' in body  # still moving: the page polls

    def test_a_finished_job_stops_polling(self):
        job = live_job(ConsumerFactory(balance=Decimal("50")))
        JobRequest.objects.filter(pk=job.pk).update(status="COMPLETED")

        body = signed_in(job.consumer).get(reverse("pages:job-live", args=[job.pk])).content.decode()

        assert 'data-status="COMPLETED"' in body and "hx-trigger" not in body

    def test_another_consumers_job_is_not_found(self):
        job = live_job(ConsumerFactory(balance=Decimal("50")))
        client = signed_in(ConsumerFactory())

        for name in ("pages:job-detail", "pages:job-live"):
            assert client.get(reverse(name, args=[job.pk])).status_code == 404
        assert client.post(reverse("pages:job-cancel", args=[job.pk])).status_code == 404
        job.refresh_from_db()
        assert job.status == "QUEUED"

    def test_cancels_a_queued_job_and_returns_its_escrow(self):
        consumer = ConsumerFactory(balance=Decimal("50"))
        job = live_job(consumer, budget=Decimal("10"))

        response = signed_in(consumer).post(reverse("pages:job-cancel", args=[job.pk]))

        job.refresh_from_db()
        assert response.status_code == 302 and job.status == "CANCELLED"
        assert LedgerAccount.objects.get(kind="CONSUMER", user=consumer).balance == Decimal("50")

    def test_cancelling_a_running_job_is_a_message_not_an_error(self):
        round_obj, job, _ = cleared_round_with_a_lease()
        JobRequest.objects.filter(pk=job.pk).update(status="RUNNING")
        client = signed_in(job.consumer)

        response = client.post(reverse("pages:job-cancel", args=[job.pk]), follow=True)

        assert response.status_code == 200
        assert "cannot be cancelled" in response.content.decode()

    def test_an_empty_list_says_what_to_do_next(self):
        body = signed_in(ConsumerFactory()).get(reverse("pages:job-list")).content.decode()

        assert "No jobs yet" in body and reverse("pages:job-new") in body

    @pytest.mark.parametrize("size", [1, 20])
    def test_the_list_costs_the_same_queries_at_any_size(self, size, django_assert_max_num_queries):
        consumer = ConsumerFactory(balance=Decimal("1000"))
        for _ in range(size):
            live_job(consumer, budget=Decimal("1"))
        client = signed_in(consumer)

        # + 1 for the page's leases (where each job ran), + 2 more once some job has one.
        with django_assert_max_num_queries(7):
            response = client.get(reverse("pages:job-list"))
        with django_assert_max_num_queries(5):
            live = client.get(reverse("pages:job-list-live"))

        assert response.content.decode().count('<span class="badge QUEUED">') == size
        assert 'hx-trigger="every 2s"' in live.content.decode()

    @pytest.mark.parametrize("leases", [1, 6])
    def test_the_detail_costs_the_same_queries_at_any_number_of_leases(
        self, leases, django_assert_max_num_queries
    ):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = live_job(consumer)
        (round_obj,) = synthetic_rounds(1)
        resource = ResourceFactory()
        for n in range(leases):
            status = Lease.Status.DISPATCHED if n == leases - 1 else Lease.Status.REASSIGNED
            lease_for(job, resource, round_obj if n == 0 else synthetic_rounds(1)[0], status=status)
        client = signed_in(consumer)

        # the sixth: the job's settlement path; the last two: its SLA terms and its leases' SLA rows
        with django_assert_max_num_queries(8):
            response = client.get(reverse("pages:job-detail", args=[job.pk]))

        assert response.status_code == 200


class TestBalance:
    def test_shows_the_ledger_entries_and_warns_when_the_balance_is_low(self):
        consumer = ConsumerFactory(balance=Decimal("12"))
        live_job(consumer, budget=Decimal("5"))

        body = signed_in(consumer).get(reverse("pages:balance")).content.decode()

        assert "Deposit" in body and "Escrow hold" in body
        assert 'id="low-balance"' in body and "7.00 available" in body

    def test_no_warning_with_enough_money(self):
        body = (
            signed_in(ConsumerFactory(balance=Decimal("500"))).get(reverse("pages:balance")).content.decode()
        )

        assert 'id="low-balance"' not in body

    def test_a_provider_account_cannot_open_it(self):
        assert signed_in(ProviderUserFactory()).get(reverse("pages:balance")).status_code == 403

"""The SLA contract in a real browser: the consumer's job page shows the terms it stated and what
its lease measured; the provider's lease page shows the same contract and the breach it paid."""

from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from auctions.models import JobTerms, Lease, LeaseSla
from auctions.services.sla import job_terms_set, lease_sla_copy
from tests.browser.conftest import log_in, user_with_password
from tests.factories import ConsumerFactory, ProviderFactory, ProviderUserFactory, ResourceFactory, job_submit
from tests.integration.test_leases import make_lease

pytestmark = pytest.mark.browser


def completed_lease_in_breach(settings):
    """A job with stated terms whose lease completed with a latency breach measured."""
    settings.CPX_MAX_JOB_DEADLINE_DAYS = 36500
    consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
    now = timezone.now()
    job = job_submit(consumer=consumer, now=now, deadline=now.replace(year=2099))
    job_terms_set(
        consumer=consumer,
        job_id=job.pk,
        data={"latency_p95_ms": 90, "min_quality": "0.95", "latency_penalty_rate": "0.3"},
        now=now,
    )
    provider = ProviderFactory(user=user_with_password(ProviderUserFactory))
    lease = make_lease(job=job, resource=ResourceFactory(provider=provider), now=now)
    lease_sla_copy(leases=[lease])
    Lease.objects.filter(pk=lease.pk).update(
        status=Lease.Status.COMPLETED, close_reason=Lease.CloseReason.SLA_BREACH, ended_at=now
    )
    LeaseSla.objects.filter(lease=lease).update(
        probes=12,
        p50_ms=42.0,
        p95_ms=180.0,
        breaches=[{"kind": "latency", "measured": 180.0, "bound": 90.0, "rate": 0.3}],
        penalty=Decimal("0.012000"),
    )
    return consumer, provider, job, lease


class TestSlaPages:
    def test_the_job_and_lease_pages_show_the_terms_and_the_breach(self, page, live_market, settings):
        with live_market.db.turn():
            consumer, provider, job, lease = completed_lease_in_breach(settings)

        log_in(page, live_market, consumer)
        page.goto(f"{live_market.url}/jobs/{job.pk}/")
        terms = page.locator("#sla-terms")
        expect(terms.get_by_role("heading", name="SLA terms")).to_be_visible()
        expect(terms.locator(".sla-latency")).to_contain_text("at most 90 ms")
        expect(terms.locator(".sla-latency")).to_contain_text("penalty rate 0.3000")
        expect(terms.locator(".sla-quality")).to_contain_text("0.9500")
        row = terms.locator("table.sla-leases tr", has_text=f"#{lease.pk}")
        expect(row).to_contain_text("180.0")
        expect(row).to_contain_text("latency (180.00 vs 90.00)")

        page.context.clear_cookies()
        log_in(page, live_market, provider.user)
        page.goto(f"{live_market.url}/provider/leases/")
        page.get_by_role("link", name=f"#{lease.pk}").click()
        expect(page.get_by_role("heading", name="SLA terms of this lease")).to_be_visible()
        expect(page.locator(".sla-latency")).to_contain_text("at most 90 ms")
        expect(page.locator(".sla-probes")).to_contain_text("12: p50 42.0 ms, p95 180.0 ms")
        expect(page.locator(".sla-breaches")).to_contain_text("latency")
        expect(page.get_by_text("Completed in breach of its SLA")).to_be_visible()
        assert page.problems == []

    def test_the_consumer_states_a_queued_jobs_terms_on_its_page(self, page, live_market, settings):
        settings.CPX_MAX_JOB_DEADLINE_DAYS = 36500
        with live_market.db.turn():
            consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
            now = timezone.now()
            # No provider lists a device: the job stays queued while the page is used.
            job = job_submit(consumer=consumer, now=now, deadline=now.replace(year=2099))

        log_in(page, live_market, consumer)
        page.goto(f"{live_market.url}/jobs/{job.pk}/")
        page.get_by_label("Latency bound, p95 RTT (ms)").fill("75")
        page.get_by_label("Minimum verified quality (0–1)").fill("1.5")
        page.get_by_role("button", name="Set the terms").click()
        expect(page.get_by_text("min_quality is a number from 0 to 1.")).to_be_visible()
        page.get_by_label("Latency bound, p95 RTT (ms)").fill("75")
        page.get_by_label("Minimum verified quality (0–1)").fill("0.9")
        page.get_by_label("Latency penalty rate").fill("0.4")
        page.get_by_role("button", name="Set the terms").click()

        expect(page.get_by_text("The SLA terms are set")).to_be_visible()
        expect(page.locator(".sla-latency")).to_contain_text("at most 75 ms")
        expect(page.locator(".sla-latency")).to_contain_text("penalty rate 0.4000")
        expect(page.locator(".sla-quality")).to_contain_text("0.9000")
        terms = live_market.db.read(lambda: JobTerms.objects.get(job_id=job.pk))
        assert (terms.latency_p95_ms, terms.min_quality) == (75, Decimal("0.9000"))
        assert page.problems == []

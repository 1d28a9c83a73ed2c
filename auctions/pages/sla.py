"""The SLA pages: the provider's lease page (the lease, the SLA terms it carries — seen before
accepting, in the agent's offer too — and what CPX measured on it) and the consumer's form on its
job page that states a queued job's terms."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auctions.selectors import leases as lease_selectors
from auctions.selectors.sla import lease_sla_public
from auctions.services.sla import TERM_FIELDS, job_terms_set
from config.errors import DomainError, NotFound
from market.views.common import consumer_required, now, provider_required
from market.views.provider import provider_or_redirect


@provider_required
def lease_detail(request, pk: int):
    provider = provider_or_redirect(request)
    if provider is None:
        return redirect("pages:provider-profile")
    lease = lease_selectors.lease_get_for_provider(provider=provider, lease_id=pk)
    if lease is None:
        raise Http404("No such lease.")
    return render(
        request,
        "provider/lease_detail.html",
        {"provider": provider, "lease": lease, "sla": lease_sla_public(lease=lease)},
    )


@consumer_required
@require_POST
def job_terms(request, pk: int):
    """The consumer states its queued job's SLA terms from the job page (blank fields: no term)."""
    data = {}
    for name in TERM_FIELDS:
        value = request.POST.get(name, "").strip()
        if value:
            data[name] = int(value) if name == "latency_p95_ms" and value.isdigit() else value
    try:
        job_terms_set(consumer=request.user, job_id=pk, data=data, now=now())
    except NotFound:
        raise Http404("No such job.") from None
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "The SLA terms are set: the next round copies them to the job's lease.")
    return redirect("pages:job-detail", pk=pk)

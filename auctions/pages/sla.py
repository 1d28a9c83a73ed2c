"""The provider's lease page: the lease, the SLA terms it carries (seen before accepting, in the
agent's offer too) and what CPX measured on it."""

from django.http import Http404
from django.shortcuts import redirect, render

from auctions.selectors import leases as lease_selectors
from auctions.selectors.sla import lease_sla_public
from market.views.common import provider_required
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

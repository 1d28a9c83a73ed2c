"""The provider console: listings with the recommended ask beside the provider's own, the agent's
state, leases with usage and close reasons, earnings and what is claimable on chain (with the proofs
to claim it). Profile and listing forms are `market.views.provider`."""

from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render

from auctions.models import Lease
from auctions.selectors import leases as lease_selectors
from auctions.selectors import rounds as round_selectors
from auctions.services.provider_asks import provider_recommended_ask
from auctions.services.round_books import class_of
from contracts import selectors as chain_selectors
from market import selectors
from market.views.common import now, provider_required
from market.views.provider import provider_or_redirect

PAST_LEASES_SHOWN = 25


def _status(provider, current_time) -> dict:
    """What moves on the console: the agent's state and the leases running now."""
    return {
        "online": lease_selectors.provider_is_online(provider=provider, now=current_time),
        "last_heartbeat_at": provider.last_heartbeat_at,
        "current_leases": list(
            lease_selectors.lease_list_for_provider(provider=provider).filter(status__in=Lease.ACTIVE)
        ),
    }


@provider_required
def console(request):
    provider = provider_or_redirect(request)
    if provider is None:
        return redirect("pages:provider-profile")
    current_time = now()
    quotes = {quote.resource_class: quote for quote in round_selectors.quote_latest_list()}
    resources = []
    for resource in selectors.resource_list(provider=provider):
        key = class_of(
            device_class=resource.device_class,
            memory_gib=float(resource.memory_per_device_gib),
            region=provider.region,
        )
        quote = quotes.get(key)
        recommended = provider_recommended_ask(quote, provider.pk)
        resources.append({"resource": resource, "class": key, "quote": quote, "recommended": recommended})
    context = {
        "provider": provider,
        "resources": resources,
        "balance": selectors.balance_get(user=request.user),
        "past_leases": lease_selectors.lease_list_for_provider(provider=provider)
        .exclude(status__in=Lease.ACTIVE)
        .order_by("-id")[:PAST_LEASES_SHOWN],
        "claimable": chain_selectors.provider_claimable(provider=provider),
        **_status(provider, current_time),
    }
    return render(request, "provider/console.html", context)


@provider_required
def proofs_json(request):
    """The provider's Merkle proofs for the console's session: the document of the API's
    `GET /api/v1/provider/proofs`, to claim from the provider's own wallet."""
    provider = selectors.provider_for_user(user=request.user)
    if provider is None:
        raise Http404("No provider profile.")
    response = JsonResponse(chain_selectors.provider_proofs_document(provider=provider))
    response["Content-Disposition"] = 'inline; filename="cpx-proofs.json"'
    return response


@provider_required
def console_live(request):
    """The polled part of the console: agent state and running leases (htmx, every 2 s)."""
    provider = selectors.provider_for_user(user=request.user)
    if provider is None:
        raise Http404("No provider profile.")
    return render(request, "provider/_live.html", {"provider": provider, **_status(provider, now())})


@provider_required
def leases(request):
    provider = provider_or_redirect(request)
    if provider is None:
        return redirect("pages:provider-profile")
    rows = lease_selectors.lease_list_for_provider(provider=provider).order_by("-id")[:200]
    return render(request, "provider/leases.html", {"provider": provider, "leases": rows})

"""The provider console: profile, listings with the recommended ask beside the provider's own,
agents' state, leases with usage and close reasons, earnings and what is claimable on chain (with the
proofs to claim it)."""

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render

from auctions.models import Lease
from auctions.selectors import leases as lease_selectors
from auctions.selectors import rounds as round_selectors
from auctions.services.round_books import class_of
from config.errors import DomainError, NotFound
from contracts import selectors as chain_selectors
from market import selectors
from market.forms import ProviderProfileForm, ResourceEditForm, ResourceForm
from market.services.providers import provider_register, provider_update, resource_create, resource_update
from market.views.common import now, provider_required

PAST_LEASES_SHOWN = 25


def _provider_or_redirect(request):
    provider = selectors.provider_for_user(user=request.user)
    if provider is None:
        messages.info(request, "Register your provider profile first: then list your devices.")
    return provider


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
    provider = _provider_or_redirect(request)
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
        resources.append({"resource": resource, "class": key, "quote": quotes.get(key)})
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
    provider = _provider_or_redirect(request)
    if provider is None:
        return redirect("pages:provider-profile")
    rows = lease_selectors.lease_list_for_provider(provider=provider).order_by("-id")[:200]
    return render(request, "provider/leases.html", {"provider": provider, "leases": rows})


@provider_required
def profile(request):
    """Register the provider profile (first time) or change it."""
    provider = selectors.provider_for_user(user=request.user)
    form = ProviderProfileForm(request.POST or None, instance=provider, partial=provider is not None)
    if request.method == "POST":
        if form.is_valid():
            try:
                if provider is None:
                    provider_register(user=request.user, **form.validated_data)
                    messages.success(request, "Profile registered. Now list a device.")
                    return redirect("pages:resource-new")
                provider_update(provider=provider, **form.validated_data)
                messages.success(request, "Profile saved.")
                return redirect("pages:provider-console")
            except DomainError as error:
                form.add_domain_error(error)
        return render(request, "provider/profile.html", {"form": form, "provider": provider}, status=400)
    return render(request, "provider/profile.html", {"form": form, "provider": provider})


@provider_required
def resource_new(request):
    provider = _provider_or_redirect(request)
    if provider is None:
        return redirect("pages:provider-profile")
    form = ResourceForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                resource = resource_create(provider=provider, **form.validated_data)
            except DomainError as error:
                form.add_domain_error(error)
            else:
                messages.success(request, f"{resource.model_name} is listed.")
                return redirect("pages:provider-console")
        return render(request, "provider/resource_form.html", {"form": form, "creating": True}, status=400)
    return render(request, "provider/resource_form.html", {"form": form, "creating": True})


@provider_required
def resource_edit(request, pk: int):
    provider = selectors.provider_for_user(user=request.user)
    resource = (
        selectors.resource_list(provider=provider).filter(pk=pk).first() if provider is not None else None
    )
    if resource is None:
        raise Http404("No such resource.")  # another provider's answers the same
    form = ResourceEditForm(request.POST or None, instance=resource, partial=True)
    context = {"form": form, "resource": resource, "creating": False}
    if request.method == "POST":
        if form.is_valid():
            try:
                resource_update(provider=provider, resource_id=resource.pk, **form.validated_data)
            except NotFound:
                raise Http404("No such resource.") from None
            except DomainError as error:
                form.add_domain_error(error)
            else:
                messages.success(request, f"{resource.model_name} is saved.")
                return redirect("pages:provider-console")
        return render(request, "provider/resource_form.html", context, status=400)
    return render(request, "provider/resource_form.html", context)

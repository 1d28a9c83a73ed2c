"""Provider pages of market data: the profile and the listings' forms.

The console itself (listings with the recommended ask, the agent's state, leases, earnings and what is
claimable on chain) shows auctions and chain data and lives in `auctions.pages.provider`, under the
same URL names.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render

from config.errors import DomainError, NotFound
from market import selectors
from market.forms import ProviderProfileForm, ResourceEditForm, ResourceForm
from market.services.providers import provider_register, provider_update, resource_create, resource_update
from market.views.common import provider_required


def provider_or_redirect(request):
    provider = selectors.provider_for_user(user=request.user)
    if provider is None:
        messages.info(request, "Register your provider profile first: then list your devices.")
    return provider


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
    provider = provider_or_redirect(request)
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

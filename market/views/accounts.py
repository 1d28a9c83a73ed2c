"""Home, sign-up and API keys (any role: providers' agents and consumers' scripts use them)."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from config.errors import DomainError, NotFound
from market import selectors
from market.forms import ApiKeyForm, SignUpForm
from market.models import Role
from market.services.accounts import api_key_create, api_key_revoke
from market.views.common import now

HOME_BY_ROLE = {
    Role.PROVIDER: "pages:provider-console",
    Role.CONSUMER: "pages:job-list",
    Role.BROKER: "pages:broker-console",
}


def home(request):
    """Signed in: the user's own start page. Otherwise: what CPX is, and the way in."""
    if request.user.is_authenticated:
        if request.user.holds_role(Role.OPERATOR):
            return redirect("ops:market")
        return redirect(HOME_BY_ROLE.get(request.user.role, "pages:api-keys"))
    return render(request, "pages/landing.html")


def signup(request):
    if request.user.is_authenticated:
        return redirect("pages:home")
    role = request.GET.get("role")
    form = SignUpForm(
        request.POST or None,
        initial={"role": role} if role in (Role.PROVIDER, Role.CONSUMER, Role.BROKER) else {},
    )
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if user.role == Role.PROVIDER:
            messages.success(request, "Welcome to CPX. Register your provider profile to list resources.")
            return redirect("pages:provider-profile")
        if user.role == Role.BROKER:
            messages.success(request, "Welcome to CPX. Providers and consumers appoint you by your username.")
            return redirect("pages:broker-console")
        messages.success(request, "Welcome to CPX. An operator credits your balance before your first job.")
        return redirect("pages:job-list")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
def api_keys(request):
    """The user's keys; POST creates one in the user's role and shows it once, on this answer only."""
    form = ApiKeyForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                key, raw = api_key_create(
                    user=request.user, role=request.user.role, now=now(), name=form.cleaned_data["name"]
                )
            except DomainError as error:
                form.add_error(None, error.message)
                status = 400
            else:
                created = {"key": key, "raw": raw}
                form = ApiKeyForm()
        else:
            status = 400
    context = {"form": form, "created": created, "keys": selectors.api_key_list(user=request.user)}
    response = render(request, "accounts/api_keys.html", context, status=status)
    if created is not None:
        response.headers["Cache-Control"] = "no-store"  # the key is shown once: never from a cache
    return response


@login_required
@require_POST
def api_key_revoke_view(request, prefix: str):
    try:
        key = api_key_revoke(prefix=prefix, now=now(), user=request.user)
    except NotFound:
        raise Http404("No such API key.") from None
    messages.success(request, f"Key cpx_{key.prefix}… is revoked: it no longer authenticates.")
    return redirect("pages:api-keys")

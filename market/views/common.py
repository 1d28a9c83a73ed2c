"""Role checks and small helpers shared by the page views."""

from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from market.models import Role

TERMINAL_JOB_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"})


def role_required(role: str):
    """Sign-in required; then the user must hold `role` (operators: staff too), else 403.

    Another user's object is a 404 in the view itself (a selector scoped to the user finds nothing),
    so ids leak nothing — the same answer as the API's."""

    def decorate(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.holds_role(role):
                article = "an" if role[:1].lower() in "aeiou" else "a"
                raise PermissionDenied(f"This page needs {article} {role} account.")
            return view(request, *args, **kwargs)

        return checked

    return decorate


provider_required = role_required(Role.PROVIDER)
consumer_required = role_required(Role.CONSUMER)
operator_required = role_required(Role.OPERATOR)


def is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def now():
    return timezone.now()


def market_units(request) -> dict:
    """Template context: the currency's name and the price unit every page states (issue 14)."""
    return {"currency": settings.CPX_CURRENCY}

"""Broker pages (issue 12): the broker's console (principals, fees earned, the jobs it placed) and
the principals' page where a provider or consumer appoints and revokes its broker."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from config.errors import DomainError
from market.api.brokers import AppointSerializer
from market.broker_selectors import (
    broker_appointments_of,
    broker_balance,
    broker_fees_earned,
    broker_job_list,
    broker_principal_list,
)
from market.forms import SerializerForm
from market.models import Role
from market.services.brokers import MAX_FEE_RATE, broker_appoint, broker_revoke
from market.views.common import role_required

broker_required = role_required(Role.BROKER)


class AppointForm(SerializerForm):
    serializer_class = AppointSerializer
    fields_order = ("broker", "fee_rate")
    labels = {"broker": "Broker's username", "fee_rate": "Fee rate"}
    hints = {
        "fee_rate": f"A share of each brokered trade's value, from 0 to {MAX_FEE_RATE} (e.g. 0.02 = 2 %)."
    }


@broker_required
def broker_console(request):
    """The broker's principals, fees earned per principal, and the jobs it placed for them."""
    earned = broker_fees_earned(broker=request.user)
    context = {
        "principals": broker_principal_list(broker=request.user),
        "earned": earned,
        "earned_total": sum((row["earned"] for row in earned), 0),
        "balance": broker_balance(broker=request.user),
        "jobs": broker_job_list(broker=request.user),
    }
    return render(request, "broker/console.html", context)


def _principal(request):
    if not request.user.is_authenticated:
        return redirect("pages:login")
    if request.user.role not in (Role.PROVIDER, Role.CONSUMER):
        raise PermissionDenied("This page needs a provider or consumer account.")
    return None


def broker_appointments(request):
    """A provider or consumer appoints a broker and sees (and revokes) its appointments."""
    refused = _principal(request)
    if refused is not None:
        return refused
    form = AppointForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                appointment = broker_appoint(
                    principal=request.user,
                    broker_username=form.validated_data["broker"],
                    fee_rate=form.validated_data["fee_rate"],
                    now=timezone.now(),
                )
            except DomainError as error:
                form.add_domain_error(error)
            else:
                messages.success(request, f"{appointment.broker.username} now trades for you.")
                return redirect("pages:broker-appointments")
        status = 400
    context = {"form": form, "appointments": broker_appointments_of(principal=request.user)}
    return render(request, "broker/appointments.html", context, status=status)


@require_POST
def broker_appointment_revoke(request, pk: int):
    """Either party ends an appointment; back to where it came from."""
    if not request.user.is_authenticated:
        return redirect("pages:login")
    try:
        broker_revoke(appointment_id=pk, by=request.user, now=timezone.now())
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Appointment revoked.")
    if request.user.role == Role.BROKER:
        return redirect("pages:broker-console")
    return redirect("pages:broker-appointments")

"""Operators' admin: everything readable; money moves only through the ledger services."""

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.utils import timezone

from market.models import (
    ApiKey,
    BrokerAppointment,
    BrokerFee,
    Deposit,
    JobRequest,
    LedgerAccount,
    LedgerTransfer,
    Provider,
    Resource,
    User,
)
from market.money import DECIMAL_PLACES, MAX_AMOUNT, MAX_DIGITS, QUANTUM
from market.services.ledger import ledger_deposit


@admin.register(User)
class CpxUserAdmin(UserAdmin):
    list_display = ["username", "email", "role", "is_staff", "is_active"]
    list_filter = ["role", "is_staff", "is_active"]
    fieldsets = UserAdmin.fieldsets + (("CPX", {"fields": ["role"]}),)
    add_fieldsets = UserAdmin.add_fieldsets + (("CPX", {"fields": ["role"]}),)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "role", "name", "created_at", "revoked_at"]
    list_filter = ["role"]
    search_fields = ["prefix", "user__username", "name"]
    readonly_fields = ["user", "role", "prefix", "digest", "created_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are issued by `cpx_apikey create` or the console, where they are shown once

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["display_name", "tier", "region", "status", "reputation", "last_heartbeat_at"]
    list_filter = ["tier", "status", "region"]
    search_fields = ["display_name", "wallet_address", "user__username"]


@admin.register(Resource)
class ResourceAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "provider",
        "device_class",
        "model_name",
        "device_count",
        "ask_per_device_hour",
        "status",
    ]
    list_filter = ["device_class", "status", "auto_pricing"]
    list_select_related = ["provider"]
    search_fields = ["model_name", "provider__display_name"]


@admin.register(JobRequest)
class JobRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "consumer", "kind", "model_name", "device_count", "budget", "status", "created_at"]
    list_filter = ["status", "kind", "device_class"]
    list_select_related = ["consumer"]
    search_fields = ["model_name", "consumer__username", "idempotency_key"]
    readonly_fields = [field.name for field in JobRequest._meta.fields]

    def has_add_permission(self, request):
        return False  # jobs are submitted through the API, which sizes and funds them


class _ReadOnlyLedger(admin.ModelAdmin):
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerAccount)
class LedgerAccountAdmin(_ReadOnlyLedger):
    list_display = ["id", "kind", "user", "job", "balance"]
    list_filter = ["kind"]
    list_select_related = ["user"]

    def has_add_permission(self, request):
        return False


@admin.register(LedgerTransfer)
class LedgerTransferAdmin(_ReadOnlyLedger):
    list_display = ["id", "kind", "amount", "debit", "credit", "job", "reference", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["debit", "credit"]

    def has_add_permission(self, request):
        return False


class DepositForm(forms.ModelForm):
    consumer = forms.ModelChoiceField(queryset=User.objects.filter(role=User.Role.CONSUMER))
    deposit_amount = forms.DecimalField(
        max_digits=MAX_DIGITS, decimal_places=DECIMAL_PLACES, min_value=QUANTUM, max_value=MAX_AMOUNT
    )
    note = forms.CharField(max_length=200, required=False)

    class Meta:
        model = Deposit
        fields = []


@admin.register(Deposit)
class DepositAdmin(_ReadOnlyLedger):
    """Add a deposit: credits the consumer through `ledger_deposit`, never by editing a balance."""

    form = DepositForm
    list_display = ["id", "amount", "credit", "memo", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=LedgerTransfer.Kind.DEPOSIT).select_related("credit")

    def save_model(self, request, obj, form, change):
        transfer = ledger_deposit(
            user=form.cleaned_data["consumer"],
            amount=form.cleaned_data["deposit_amount"],
            now=timezone.now(),
            memo=form.cleaned_data["note"] or f"deposit by {request.user.username}",
        )
        obj.pk = transfer.pk


@admin.register(BrokerAppointment)
class BrokerAppointmentAdmin(admin.ModelAdmin):
    """Appointments are made and revoked by their parties (market.services.brokers): read-only here."""

    list_display = ("id", "broker", "principal", "side", "fee_rate", "status", "created_at", "revoked_at")
    list_filter = ("side", "status")
    search_fields = ("broker__username", "principal__username")

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(BrokerFee)
class BrokerFeeAdmin(_ReadOnlyLedger):
    list_display = ("id", "appointment", "lease_id", "fee_rate", "transfer")

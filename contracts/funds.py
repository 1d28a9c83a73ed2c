"""The consumer's "Add funds" page, under /funds/: register the wallet it deposits from, and where
on-chain deposits from it go (each is credited to the ledger balance once, by
`contracts.sync_deposits`). Thin: one service call (`consumer_wallet_register`)."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import path

from config.errors import DomainError
from contracts.models import ConsumerWallet
from contracts.services import consumer_wallet_register
from market.views.common import consumer_required, now

app_name = "funds"


class WalletForm(forms.Form):
    address = forms.CharField(
        max_length=42, label="Your wallet address (EIP-55)", help_text="0x and 40 hex digits, checksummed."
    )


@consumer_required
def add_funds(request):
    form = WalletForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            consumer_wallet_register(user=request.user, address=form.cleaned_data["address"], now=now())
        except DomainError as error:
            form.add_error("address", error.message)
        else:
            messages.success(request, "Your deposit wallet is registered: its deposits are credited to you.")
            return redirect("funds:add")
    context = {
        "wallet": ConsumerWallet.objects.filter(user=request.user).first(),
        "form": form,
        "contract_address": settings.CHAIN_CONTRACT_ADDRESS,
        "on_chain": settings.CPX_SETTLEMENT_ON_CHAIN,
    }
    return render(request, "contracts/add_funds.html", context, status=400 if form.errors else 200)


urlpatterns = [path("", add_funds, name="add")]

"""Issue 14, what a new user tripped over on the pages; each test fails without its fix."""

import html
import re
import shlex
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from eth_utils import to_checksum_address

from tests.factories import ConsumerFactory, ProviderFactory, ProviderUserFactory, ResourceFactory
from tests.integration.pages import cleared_round_with_a_lease, signed_in
from tests.integration.test_pages_consumer import job_form
from workers.agent.__main__ import parse_args

pytestmark = pytest.mark.django_db


class TestQuotePanel:
    def test_an_untouched_form_asks_for_what_is_missing_without_errors(self):
        client = signed_in(ConsumerFactory())
        defaults = {"kind": "INFERENCE", "quant_bits": "4", "context_length": "4096", "batch_size": "1"}

        body = client.post(reverse("pages:job-quote"), defaults).content.decode()

        assert "This field is required" not in body
        assert "still needed — Model, Parameters (billions)" in body

    def test_a_typed_value_that_is_wrong_is_still_shown(self):
        client = signed_in(ConsumerFactory())

        body = client.post(
            reverse("pages:job-quote"), {"kind": "INFERENCE", "params_billion": "lots"}
        ).content.decode()

        assert "Parameters (billions): A valid number is required." in body
        assert "This field is required" not in body

    def test_a_class_that_traded_in_recent_rounds_has_history(self):
        _, _, resource = cleared_round_with_a_lease()  # a heterogeneous round: no unit-auction price
        ResourceFactory(
            provider=resource.provider, price_floor=Decimal(0), ask_per_device_hour=Decimal("0.2")
        )
        client = signed_in(ConsumerFactory(balance=Decimal("50")))

        body = client.post(reverse("pages:job-quote"), job_form(quant_bits="4")).content.decode()

        assert "no history yet" not in body
        assert "100 % at this bid (1 trade in 1 rounds)" in body


class TestSignUp:
    def test_the_role_is_marked_required(self):
        body = Client().get(reverse("pages:signup")).content.decode()

        legend = body.split("<legend>")[1].split("</legend>")[0]
        assert "I am a" in legend and 'class="req"' in legend and "(required)" in legend


class TestBalancePage:
    def test_says_how_to_add_funds_and_registers_the_deposit_wallet(self, settings):
        settings.CHAIN_CONTRACT_ADDRESS = "0x" + "ab" * 20
        consumer = ConsumerFactory(balance=Decimal("5"))
        client = signed_in(consumer)
        address = "0x" + "c0ffee" * 6 + "beef"

        before = client.get(reverse("pages:balance")).content.decode()
        response = client.post(reverse("pages:balance"), {"address": to_checksum_address(address)})
        after = client.get(reverse("pages:balance")).content.decode()

        assert (
            "Add funds" in before
            and "Register wallet" in before
            and settings.CHAIN_CONTRACT_ADDRESS in before
        )
        assert response.status_code == 302
        assert to_checksum_address(address) in after and "Register wallet" not in after
        assert "Available (USDC)" in after

    def test_a_bad_address_is_shown_beside_the_field(self):
        client = signed_in(ConsumerFactory())

        response = client.post(reverse("pages:balance"), {"address": "0x1234"})

        assert response.status_code == 400
        assert 'id="id_address_error"' in response.content.decode()


class TestAgentHint:
    def test_the_consoles_agent_command_runs_as_shown(self):
        provider = ProviderFactory(user=ProviderUserFactory())
        client = signed_in(provider.user)

        body = client.get(reverse("pages:provider-console")).content.decode()

        command = html.unescape(re.search(r"<code>(python -m workers\.agent [^<]*)</code>", body).group(1))
        argv = shlex.split(command.replace("<your API key>", "cpx_abc_secret"))[3:]
        args = parse_args(argv)
        assert args.backend == "simulate"

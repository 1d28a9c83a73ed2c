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
    def test_shows_the_wallet_and_leads_to_adding_funds(self, settings):
        settings.CHAIN_CONTRACT_ADDRESS = "0x" + "ab" * 20
        consumer = ConsumerFactory(balance=Decimal("5"))
        client = signed_in(consumer)
        address = to_checksum_address("0x" + "c0ffee" * 6 + "beef")

        before = client.get(reverse("pages:balance")).content.decode()
        funds = client.get(reverse("funds:add")).content.decode()
        response = client.post(reverse("funds:add"), {"address": address})
        after = client.get(reverse("pages:balance")).content.decode()

        assert "none registered yet" in before and reverse("funds:add") in before
        assert "Register wallet" in funds and settings.CHAIN_CONTRACT_ADDRESS in funds
        assert response.status_code == 302
        assert address in after and "Available (USDC)" in after
        assert "Register wallet" not in client.get(reverse("funds:add")).content.decode()

    def test_a_bad_address_is_shown_beside_the_field(self):
        client = signed_in(ConsumerFactory())

        response = client.post(reverse("funds:add"), {"address": "0x1234"})

        assert response.status_code == 400
        assert 'id="id_address_error"' in response.content.decode()

    def test_is_for_consumers(self):
        from tests.factories import ProviderUserFactory as Provider

        assert signed_in(Provider()).get(reverse("funds:add")).status_code == 403


class TestAgentHint:
    def test_the_consoles_agent_command_runs_as_shown(self):
        provider = ProviderFactory(user=ProviderUserFactory())
        client = signed_in(provider.user)

        body = client.get(reverse("pages:provider-console")).content.decode()

        command = html.unescape(re.search(r"<code>(python -m workers\.agent [^<]*)</code>", body).group(1))
        argv = shlex.split(command.replace("<your API key>", "cpx_abc_secret"))[3:]
        args = parse_args(argv)
        assert args.backend == "simulate"

"""The money API: the caller's balance and ledger, and operator deposits and ledger."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from auctions.services.jobs import job_request_cancel
from market.models import LedgerAccount, LedgerTransfer
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import ConsumerFactory, OperatorFactory, ProviderFactory, job_submit

pytestmark = pytest.mark.django_db

DEPOSITS = "/api/v1/operator/deposits"


def available(user) -> Decimal:
    account = LedgerAccount.objects.filter(user=user, kind=LedgerAccount.Kind.CONSUMER).first()
    return account.balance if account else Decimal(0)


class TestBalance:
    def test_shows_available_and_held_money(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job_submit(consumer=consumer, budget=Decimal("30"))

        response = bearer_client(consumer).get("/api/v1/balance")

        assert response.status_code == 200
        money = {"available": "70.000000", "held_in_escrow": "30.000000", "earnings": "0.000000"}
        assert response.json() == money

    def test_shows_zero_to_a_provider(self):
        provider = ProviderFactory()

        response = bearer_client(provider.user).get("/api/v1/balance")

        assert response.json()["available"] == "0.000000"
        assert response.json()["held_in_escrow"] == "0.000000"


class TestLedgerList:
    def test_shows_only_the_callers_transfers_newest_first(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(consumer=consumer, budget=Decimal("30"))
        job_request_cancel(consumer=consumer, job_id=job.pk, now=NOW)
        ConsumerFactory(balance=Decimal("55"))

        response = bearer_client(consumer).get("/api/v1/ledger")

        rows = response.json()["results"]
        assert [row["kind"] for row in rows] == ["RELEASE", "HOLD", "DEPOSIT"]
        assert {row["amount"] for row in rows} == {"30.000000", "100.000000"}
        assert {row["job"] for row in rows} == {job.pk, None}

    def test_filters_by_kind(self):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job_submit(consumer=consumer)

        response = bearer_client(consumer).get("/api/v1/ledger", {"kind": "HOLD"})

        assert [row["kind"] for row in response.json()["results"]] == ["HOLD"]

    def test_refuses_an_unknown_kind(self):
        consumer = ConsumerFactory(balance=Decimal("100"))

        response = bearer_client(consumer).get("/api/v1/ledger", {"kind": "THEFT"})

        assert_error(response, 400, "invalid")

    def test_costs_the_same_few_queries_for_5_or_30_transfers(self, django_assert_max_num_queries):
        consumer = ConsumerFactory(balance=Decimal("1000"))
        client = bearer_client(consumer)
        for _ in range(4):
            job_submit(consumer=consumer)
        with CaptureQueriesContext(connection) as five:
            client.get("/api/v1/ledger")
        for _ in range(25):
            job_submit(consumer=consumer)

        with django_assert_max_num_queries(3):
            response = client.get("/api/v1/ledger")

        assert len(response.json()["results"]) == 30
        with CaptureQueriesContext(connection) as thirty:
            client.get("/api/v1/ledger")
        assert len(thirty) == len(five)


class TestOperatorLedger:
    def test_lists_everyones_transfers(self):
        consumers = [ConsumerFactory(balance=Decimal("10")) for _ in range(2)]

        response = bearer_client(OperatorFactory()).get("/api/v1/operator/ledger", {"limit": 1000})

        credited = {row["credit_account"] for row in response.json()["results"]}
        assert {f"CONSUMER {c.username}" for c in consumers} <= credited

    def test_costs_the_same_few_queries_for_5_or_30_transfers(self, django_assert_max_num_queries):
        client = bearer_client(OperatorFactory())
        for _ in range(5):
            ConsumerFactory(balance=Decimal("10"))
        with CaptureQueriesContext(connection) as five:
            client.get("/api/v1/operator/ledger")
        for _ in range(25):
            ConsumerFactory(balance=Decimal("10"))

        with django_assert_max_num_queries(3):
            response = client.get("/api/v1/operator/ledger")

        assert len(response.json()["results"]) == 30
        with CaptureQueriesContext(connection) as thirty:
            client.get("/api/v1/operator/ledger")
        assert len(thirty) == len(five)


@pytest.fixture
def operator_client():
    return bearer_client(OperatorFactory())


class TestOperatorDeposit:
    def test_credits_a_consumer(self, operator_client):
        consumer = ConsumerFactory()
        body = {"username": consumer.username, "amount": "12.34"}

        response = operator_client.post(DEPOSITS, body, format="json")

        assert response.status_code == 201, response.json()
        assert response.json()["kind"] == "DEPOSIT"
        assert available(consumer) == Decimal("12.34")

    def test_credits_once_for_a_retried_idempotency_key(self, operator_client):
        consumer = ConsumerFactory()
        body = {"username": consumer.username, "amount": "5"}
        first = operator_client.post(DEPOSITS, body, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")

        again = operator_client.post(DEPOSITS, body, format="json", HTTP_IDEMPOTENCY_KEY="wire-77")

        assert again.json()["id"] == first.json()["id"]
        assert available(consumer) == Decimal("5")
        assert LedgerTransfer.objects.filter(credit__user=consumer).count() == 1

    def test_refuses_a_retried_key_with_another_amount(self, operator_client):
        consumer = ConsumerFactory()
        operator_client.post(
            DEPOSITS, {"username": consumer.username, "amount": "5"}, format="json", HTTP_IDEMPOTENCY_KEY="w"
        )

        response = operator_client.post(
            DEPOSITS, {"username": consumer.username, "amount": "6"}, format="json", HTTP_IDEMPOTENCY_KEY="w"
        )

        assert_error(response, 409, "conflict")
        assert available(consumer) == Decimal("5")

    def test_refuses_a_deposit_to_a_provider(self, operator_client):
        provider = ProviderFactory()

        response = operator_client.post(
            DEPOSITS, {"username": provider.user.username, "amount": "5"}, format="json"
        )

        assert_error(response, 400, "invalid")
        assert not LedgerAccount.objects.filter(user=provider.user).exists()

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("amount", "0"),
            ("amount", "-5"),
            ("amount", -5),
            ("amount", 1e30),
            ("amount", 10**40),
            ("amount", "NaN"),
            ("amount", "Infinity"),
            ("amount", "0.0000001"),
            ("amount", "five"),
            ("amount", [5]),
            ("amount", None),
            ("username", "nobody-at-all"),
            ("username", "u" * 151),
            ("username", 42),
            ("memo", "m" * 201),
            ("currency", "EUR"),
        ],
        ids=lambda v: repr(v)[:40],
    )
    def test_refuses_an_invalid_deposit_and_writes_nothing(self, operator_client, field, value):
        consumer = ConsumerFactory()
        body = {"username": consumer.username, "amount": "5", field: value}

        response = operator_client.post(DEPOSITS, body, format="json")

        assert_error(response, 400, "invalid")
        assert available(consumer) == 0

    @pytest.mark.parametrize("raw", ['{"amount": NaN}', '{"amount": Infinity}', '{"amount": 1,'])
    def test_refuses_malformed_json(self, operator_client, raw):
        response = operator_client.generic("POST", DEPOSITS, raw, content_type="application/json")

        assert_error(response, 400, "malformed_request")

    @pytest.mark.parametrize("key", ["k" * 129, "ключ", ""], ids=repr)
    def test_refuses_a_bad_idempotency_key(self, operator_client, key):
        consumer = ConsumerFactory()

        response = operator_client.post(
            DEPOSITS, {"username": consumer.username, "amount": "5"}, format="json", HTTP_IDEMPOTENCY_KEY=key
        )

        assert_error(response, 400, "invalid")
        assert available(consumer) == 0

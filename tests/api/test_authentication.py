"""Who may call what: API keys, roles, and rate limits on every endpoint of market/api/urls.py
(and the job cancel of auctions/api/jobs.py, which changes a market job with its leases)."""

import re
from decimal import Decimal

import pytest

from auctions.api import jobs as job_urls
from config.errors import InvalidInput
from market.api import urls as market_urls
from market.models import DataFile, Role
from market.services.accounts import api_key_create, api_key_revoke
from market.services.files import file_store
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import (
    ConsumerFactory,
    OperatorFactory,
    ProviderFactory,
    ProviderUserFactory,
    ResourceFactory,
    UserFactory,
    job_submit,
)

pytestmark = pytest.mark.django_db

# Every route of market/api/urls.py and auctions/api/jobs.py with each method it serves and the role
# it needs (None: any).
ENDPOINTS = [
    ("get", "/api/v1/me", None),
    ("get", "/api/v1/provider", Role.PROVIDER),
    ("post", "/api/v1/provider", Role.PROVIDER),
    ("patch", "/api/v1/provider", Role.PROVIDER),
    ("get", "/api/v1/resources", Role.PROVIDER),
    ("post", "/api/v1/resources", Role.PROVIDER),
    ("get", "/api/v1/resources/{resource}", Role.PROVIDER),
    ("patch", "/api/v1/resources/{resource}", Role.PROVIDER),
    ("delete", "/api/v1/resources/{resource}", Role.PROVIDER),
    ("get", "/api/v1/jobs", Role.CONSUMER),
    ("post", "/api/v1/jobs", Role.CONSUMER),
    ("get", "/api/v1/jobs/{job}", Role.CONSUMER),
    ("post", "/api/v1/jobs/{job}/cancel", Role.CONSUMER),
    ("get", "/api/v1/jobs/{job}/output", Role.CONSUMER),
    ("get", "/api/v1/jobs/{job}/errors", Role.CONSUMER),
    ("get", "/api/v1/files", None),
    ("post", "/api/v1/files", None),
    ("get", "/api/v1/files/{file}", None),
    ("get", "/api/v1/files/{file}/content", None),
    ("get", "/api/v1/balance", None),
    ("get", "/api/v1/ledger", None),
    ("post", "/api/v1/operator/deposits", Role.OPERATOR),
    ("get", "/api/v1/operator/jobs", Role.OPERATOR),
    ("get", "/api/v1/operator/providers", Role.OPERATOR),
    ("get", "/api/v1/operator/resources", Role.OPERATOR),
    ("get", "/api/v1/operator/ledger", Role.OPERATOR),
    ("get", "/api/v1/broker-appointments", None),  # a provider or a consumer (tests/api/test_brokers_api.py)
    ("post", "/api/v1/broker-appointments", None),
    ("post", "/api/v1/broker-appointments/{job}/revoke", None),
    ("get", "/api/v1/broker/principals", Role.BROKER),
    ("get", "/api/v1/broker/fees", Role.BROKER),
    ("post", "/api/v1/broker/principals/{username}/jobs", Role.BROKER),
    ("patch", "/api/v1/broker/principals/{username}/resources/{resource}", Role.BROKER),
]
# Routes anyone may call without credentials (tested in test_job_placement.py).
PUBLIC_ENDPOINTS = [("get", "/api/v1/regions")]
ROLE_ENDPOINTS = [e for e in ENDPOINTS if e[2] is not None]
IDS = [f"{method.upper()} {path}" for method, path, _ in ENDPOINTS]
ROLE_IDS = [f"{method.upper()} {path}" for method, path, _ in ROLE_ENDPOINTS]


@pytest.fixture
def targets():
    """A real resource and job, so a refusal cannot be a 404 in disguise."""
    resource = ResourceFactory()
    job = job_submit(consumer=ConsumerFactory(balance=Decimal("100")))
    data_file = file_store(
        owner=job.consumer, purpose=DataFile.Purpose.DATASET, filename="d.bin", data=b"x", now=NOW
    )
    return {
        "resource": resource.pk,
        "job": job.pk,
        "file": data_file.public_id,
        "username": job.consumer.username,
    }


def call(client, method, path, targets):
    return getattr(client, method)(path.format(**targets), {}, format="json")


def test_the_endpoint_table_covers_every_route_of_the_market_api():
    patterns = market_urls.urlpatterns + job_urls.urlpatterns
    routes = {
        str(p.pattern)
        .replace("<int:pk>", "{}")
        .replace("<str:file_id>", "{}")
        .replace("<str:username>", "{}")
        for p in patterns
    }

    listed = {re.sub(r"\{\w+\}", "{}", path.removeprefix("/api/v1/")) for _, path, _ in ENDPOINTS} | {
        path.removeprefix("/api/v1/") for _, path in PUBLIC_ENDPOINTS
    }

    assert routes == listed


class TestAuthentication:
    @pytest.mark.parametrize(("method", "path", "role"), ENDPOINTS, ids=IDS)
    def test_refuses_a_call_without_credentials(self, api_client, targets, method, path, role):
        response = call(api_client, method, path, targets)

        assert_error(response, 401, "not_authenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize(("method", "path", "role"), ENDPOINTS, ids=IDS)
    def test_refuses_a_revoked_key(self, api_client, targets, method, path, role):
        user = OperatorFactory() if role is None else _user_of(role)
        key, raw = api_key_create(user=user, role=role or Role.OPERATOR, now=NOW)
        api_key_revoke(prefix=key.prefix, now=NOW)
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

        response = call(api_client, method, path, targets)

        assert_error(response, 401, "authentication_failed")

    @pytest.mark.parametrize(
        "header",
        [
            "Token {raw}",
            "bearer {raw}",
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "{raw}",
            "Bearer cpx_0000000000_nosuchsecret",
            "Bearer cpx_{prefix}_wrongsecret",
            "Bearer cpx_{prefix}",
            "Bearer xyz_{prefix}_{secret}",
            "Bearer cpx_caf\u00e9_x",
            "Bearer " + "A" * 10_000,
        ],
        ids=repr,
    )
    def test_refuses_a_wrong_scheme_or_bad_key(self, api_client, header):
        key, raw = api_key_create(user=ConsumerFactory(), role=Role.CONSUMER, now=NOW)
        secret = raw.split("_", 2)[2]
        api_client.credentials(HTTP_AUTHORIZATION=header.format(raw=raw, prefix=key.prefix, secret=secret))

        response = api_client.get("/api/v1/me")

        assert_error(response, 401, "authentication_failed")

    def test_accepts_a_good_key_and_says_who_is_calling(self):
        consumer = ConsumerFactory()

        response = bearer_client(consumer).get("/api/v1/me")

        assert response.status_code == 200
        assert response.json() == {"username": consumer.username, "role": "consumer", "key_role": "consumer"}


def _user_of(role):
    if role == Role.PROVIDER:
        return ProviderFactory().user
    if role == Role.OPERATOR:
        return OperatorFactory()
    if role == Role.BROKER:
        return UserFactory(role=Role.BROKER)
    return ConsumerFactory(balance=Decimal("100"))


class TestRoles:
    @pytest.mark.parametrize(("method", "path", "role"), ROLE_ENDPOINTS, ids=ROLE_IDS)
    def test_refuses_a_key_of_another_role(self, targets, method, path, role):
        other = Role.CONSUMER if role != Role.CONSUMER else Role.PROVIDER
        client = bearer_client(_user_of(other))

        response = call(client, method, path, targets)

        assert_error(response, 403, "permission_denied")

    @pytest.mark.parametrize(("method", "path", "role"), ROLE_ENDPOINTS, ids=ROLE_IDS)
    def test_refuses_a_key_whose_user_no_longer_holds_its_role(self, targets, method, path, role):
        user = _user_of(role)
        client = bearer_client(user, role)
        user.role = Role.CONSUMER if role != Role.CONSUMER else Role.PROVIDER
        user.is_staff = False
        user.save(update_fields=["role", "is_staff"])

        response = call(client, method, path, targets)

        assert_error(response, 403, "permission_denied")

    def test_refuses_to_issue_a_key_for_a_role_the_user_does_not_hold(self):
        provider = ProviderUserFactory()

        with pytest.raises(InvalidInput) as error:
            api_key_create(user=provider, role=Role.OPERATOR, now=NOW)

        assert error.value.code == "invalid"

    def test_refuses_an_operator_key_on_consumer_routes(self):
        operator = OperatorFactory()
        client = bearer_client(operator, Role.OPERATOR)

        response = client.get("/api/v1/jobs")

        assert_error(response, 403, "permission_denied")


class TestRateLimit:
    def test_answers_429_with_retry_after_once_a_key_spends_its_rate(self, three_per_minute):
        client = bearer_client(ConsumerFactory())
        allowed = [client.get("/api/v1/me").status_code for _ in range(3)]

        response = client.get("/api/v1/me")

        assert allowed == [200, 200, 200]
        error = assert_error(response, 429, "rate_limited")
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert error["extra"]["retry_after_s"] == retry_after

    def test_counts_each_key_separately(self, three_per_minute):
        consumer = ConsumerFactory()
        spent = bearer_client(consumer)
        for _ in range(4):
            spent.get("/api/v1/me")

        response = bearer_client(consumer).get("/api/v1/me")

        assert spent.get("/api/v1/me").status_code == 429
        assert response.status_code == 200

    def test_limits_writes_too(self, three_per_minute):
        client = bearer_client(ConsumerFactory(balance=Decimal("100")))
        for _ in range(3):
            client.get("/api/v1/balance")

        response = client.post("/api/v1/jobs", {}, format="json")

        assert_error(response, 429, "rate_limited")

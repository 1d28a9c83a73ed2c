"""API keys against the database: creation per role, revocation, authentication."""

import pytest

from config.errors import InvalidInput, NotFound
from market.models import ApiKey, Role
from market.selectors import api_key_authenticate
from market.services.accounts import api_key_create, api_key_revoke
from tests.conftest import NOW, later
from tests.factories import ConsumerFactory, OperatorFactory, ProviderUserFactory

pytestmark = pytest.mark.django_db


class TestApiKeyCreate:
    def test_shows_the_key_once_and_stores_only_its_digest(self):
        consumer = ConsumerFactory()

        key, raw = api_key_create(user=consumer, role=Role.CONSUMER, now=NOW, name="laptop")

        scheme, prefix, secret = raw.split("_", 2)
        assert (scheme, prefix) == ("cpx", key.prefix)
        assert secret not in key.digest
        assert len(key.digest) == 64
        assert (key.role, key.user, key.is_active) == (Role.CONSUMER, consumer, True)

    def test_refuses_a_role_the_user_does_not_hold(self):
        consumer = ConsumerFactory()

        with pytest.raises(InvalidInput):
            api_key_create(user=consumer, role=Role.PROVIDER, now=NOW)

        assert not ApiKey.objects.filter(user=consumer).exists()

    def test_refuses_an_unknown_role(self):
        provider = ProviderUserFactory()

        with pytest.raises(InvalidInput):
            api_key_create(user=provider, role="admin", now=NOW)

        assert not ApiKey.objects.filter(user=provider).exists()

    def test_gives_operators_operator_keys(self):
        operator = OperatorFactory()

        key, _ = api_key_create(user=operator, role=Role.OPERATOR, now=NOW)

        assert key.role == Role.OPERATOR


class TestApiKeyAuthenticate:
    def test_finds_the_key_and_its_user(self):
        consumer = ConsumerFactory()
        key, raw = api_key_create(user=consumer, role=Role.CONSUMER, now=NOW)

        found = api_key_authenticate(raw)

        assert found == key
        assert found.user == consumer

    def test_refuses_a_revoked_key(self):
        consumer = ConsumerFactory()
        key, raw = api_key_create(user=consumer, role=Role.CONSUMER, now=NOW)
        api_key_revoke(prefix=key.prefix, now=later(minutes=1))

        found = api_key_authenticate(raw)

        assert found is None

    def test_refuses_the_key_of_an_inactive_user(self):
        consumer = ConsumerFactory()
        _, raw = api_key_create(user=consumer, role=Role.CONSUMER, now=NOW)
        consumer.is_active = False
        consumer.save(update_fields=["is_active"])

        found = api_key_authenticate(raw)

        assert found is None

    def test_refuses_a_wrong_secret_for_a_real_prefix(self):
        consumer = ConsumerFactory()
        key, raw = api_key_create(user=consumer, role=Role.CONSUMER, now=NOW)

        found = api_key_authenticate(f"cpx_{key.prefix}_{'A' * 43}")

        assert found is None

    @pytest.mark.parametrize(
        "raw", ["", "cpx", "cpx_", "cpx__secret", "key_abc_def", "cpx_" + "a" * 17 + "_secret", "Bearer x"]
    )
    def test_refuses_what_is_not_a_key(self, raw):
        assert api_key_authenticate(raw) is None


class TestApiKeyRevoke:
    def test_is_a_no_op_the_second_time(self):
        consumer = ConsumerFactory()
        key, _ = api_key_create(user=consumer, role=Role.CONSUMER, now=NOW)
        first = api_key_revoke(prefix=key.prefix, now=later(minutes=1))

        second = api_key_revoke(prefix=key.prefix, now=later(minutes=2))

        assert second.revoked_at == first.revoked_at == later(minutes=1)

    def test_answers_not_found_for_another_users_key(self):
        owner = ConsumerFactory()
        intruder = ConsumerFactory()
        key, _ = api_key_create(user=owner, role=Role.CONSUMER, now=NOW)

        with pytest.raises(NotFound):
            api_key_revoke(prefix=key.prefix, now=NOW, user=intruder)

        key.refresh_from_db()
        assert key.is_active

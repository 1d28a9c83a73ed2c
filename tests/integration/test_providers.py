"""Providers and resources against the database: EIP-55 wallets, ask floors, ownership."""

from decimal import Decimal

import pytest

from config.errors import Conflict, InvalidInput, NotFound
from market.models import Provider, Resource
from market.services.providers import (
    provider_register,
    provider_update,
    resource_create,
    resource_retire,
    resource_update,
    wallet_address_checked,
)
from tests.conftest import NOW, later
from tests.factories import ConsumerFactory, ProviderFactory, ProviderUserFactory, ResourceFactory

pytestmark = pytest.mark.django_db

# The EIP-55 specification's own test vector.
CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


class TestWalletAddressChecked:
    def test_accepts_a_checksummed_address(self):
        assert wallet_address_checked(CHECKSUMMED) == CHECKSUMMED

    def test_checksums_an_all_lower_case_address(self):
        assert wallet_address_checked(CHECKSUMMED.lower()) == CHECKSUMMED

    def test_checksums_an_all_upper_case_address(self):
        assert wallet_address_checked("0x" + CHECKSUMMED[2:].upper()) == CHECKSUMMED

    def test_refuses_a_mixed_case_address_with_a_bad_checksum(self):
        typo = CHECKSUMMED[:3] + CHECKSUMMED[3].swapcase() + CHECKSUMMED[4:]

        with pytest.raises(InvalidInput) as error:
            wallet_address_checked(typo)

        assert "checksum" in error.value.message

    @pytest.mark.parametrize(
        "address", ["", "0x", "0x123", CHECKSUMMED + "00", CHECKSUMMED[2:] + "zz", "0x" + "g" * 40, None, 42]
    )
    def test_refuses_what_is_not_an_address(self, address):
        with pytest.raises(InvalidInput):
            wallet_address_checked(address)


class TestProviderRegister:
    def test_stores_the_checksummed_wallet(self):
        user = ProviderUserFactory()

        provider = provider_register(
            user=user, display_name="Garage rig", wallet_address=CHECKSUMMED.lower(), region="eu-west"
        )

        provider.refresh_from_db()
        assert provider.wallet_address == CHECKSUMMED

    def test_refuses_a_bad_checksum_and_writes_nothing(self):
        user = ProviderUserFactory()
        typo = CHECKSUMMED.replace("aA", "Aa", 1)

        with pytest.raises(InvalidInput):
            provider_register(user=user, display_name="Typo", wallet_address=typo, region="eu-west")

        assert not Provider.objects.filter(user=user).exists()

    def test_refuses_a_second_profile(self):
        provider = ProviderFactory()

        with pytest.raises(Conflict):
            provider_register(
                user=provider.user, display_name="Again", wallet_address=CHECKSUMMED, region="eu-west"
            )

        assert Provider.objects.filter(user=provider.user).count() == 1

    def test_refuses_a_consumer(self):
        consumer = ConsumerFactory()

        with pytest.raises(InvalidInput):
            provider_register(user=consumer, display_name="No", wallet_address=CHECKSUMMED, region="eu")

        assert not Provider.objects.filter(user=consumer).exists()

    def test_update_checks_the_new_wallet(self):
        provider = ProviderFactory()
        before = provider.wallet_address

        with pytest.raises(InvalidInput):
            provider_update(provider=provider, wallet_address="0xnothex")

        provider.refresh_from_db()
        assert provider.wallet_address == before


class TestResourceCreate:
    def test_lists_a_resource_for_its_provider(self):
        provider = ProviderFactory()

        resource = resource_create(
            provider=provider,
            device_class="GPU",
            model_name="Jetson Orin",
            device_count=1,
            memory_per_device_gib=Decimal("32"),
            host_ram_gib=Decimal("32"),
            vcpu=12,
            fp16_tflops=Decimal("42.5"),
            ask_per_device_hour=Decimal("0.05"),
        )

        assert resource.provider == provider
        assert resource.status == Resource.Status.LISTED

    def test_refuses_an_ask_below_the_floor(self):
        provider = ProviderFactory()

        with pytest.raises(InvalidInput) as error:
            ResourceFactory(provider=provider, ask_per_device_hour=Decimal("0.09"), price_floor=Decimal("1"))

        assert error.value.extra["field"] == "ask_per_device_hour"
        assert not Resource.objects.filter(provider=provider).exists()

    def test_refuses_a_window_that_ends_before_it_starts(self):
        provider = ProviderFactory()

        with pytest.raises(InvalidInput):
            ResourceFactory(provider=provider, available_from=later(hours=2), available_until=NOW)

        assert not Resource.objects.filter(provider=provider).exists()


class TestResourceUpdate:
    def test_refuses_to_lower_the_ask_below_the_existing_floor(self):
        resource = ResourceFactory(ask_per_device_hour=Decimal("0.4"), price_floor=Decimal("0.3"))

        with pytest.raises(InvalidInput):
            resource_update(
                provider=resource.provider, resource_id=resource.pk, ask_per_device_hour=Decimal("0.2")
            )

        resource.refresh_from_db()
        assert resource.ask_per_device_hour == Decimal("0.4")

    def test_answers_not_found_for_another_providers_resource(self):
        resource = ResourceFactory()
        intruder = ProviderFactory()

        with pytest.raises(NotFound):
            resource_update(provider=intruder, resource_id=resource.pk, model_name="Stolen")

        resource.refresh_from_db()
        assert resource.model_name == "RTX 4090"

    def test_keeps_a_retired_resource_retired(self):
        resource = ResourceFactory()
        resource_retire(provider=resource.provider, resource_id=resource.pk)

        with pytest.raises(Conflict):
            resource_update(provider=resource.provider, resource_id=resource.pk, status="LISTED")

        resource.refresh_from_db()
        assert resource.status == Resource.Status.RETIRED

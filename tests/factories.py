"""factory_boy factories. Everything that touches money or checked fields goes through the
services, so a factory can never make a state the services could not (a ledger out of balance,
an unchecked wallet, an unsized job)."""

import secrets
from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone
from eth_utils import to_checksum_address

from market.models import JobRequest, Provider, Resource, Role, User
from market.services.jobs import job_request_submit
from market.services.ledger import ledger_deposit
from market.services.providers import provider_register, resource_create
from tests.conftest import NOW


def random_wallet() -> str:
    """A fresh EIP-55 checksummed address."""
    return to_checksum_address("0x" + secrets.token_hex(20))


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    role = Role.CONSUMER


class ConsumerFactory(UserFactory):
    """A consumer; `balance=Decimal(...)` funds it through an operator-style deposit."""

    username = factory.Sequence(lambda n: f"consumer{n}")
    role = Role.CONSUMER

    @factory.post_generation
    def balance(user, create, extracted, **kwargs):
        if create and extracted:
            ledger_deposit(user=user, amount=Decimal(extracted), now=NOW, memo="factory")


class ProviderUserFactory(UserFactory):
    username = factory.Sequence(lambda n: f"provider{n}")
    role = Role.PROVIDER


class OperatorFactory(UserFactory):
    username = factory.Sequence(lambda n: f"operator{n}")
    role = Role.OPERATOR
    is_staff = True


class ProviderFactory(factory.django.DjangoModelFactory):
    """A provider profile registered through `provider_register` (so the wallet is checked)."""

    class Meta:
        model = Provider

    user = factory.SubFactory(ProviderUserFactory)
    display_name = factory.Sequence(lambda n: f"Edge site {n}")
    wallet_address = factory.LazyFunction(random_wallet)
    region = "eu-west"
    tier = Provider.Tier.EDGE

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return provider_register(**kwargs)


class ResourceFactory(factory.django.DjangoModelFactory):
    """A listing made through `resource_create` (so the ask/floor and window rules hold)."""

    class Meta:
        model = Resource

    provider = factory.SubFactory(ProviderFactory)
    device_class = Resource.DeviceClass.GPU
    model_name = "RTX 4090"
    device_count = 1
    memory_per_device_gib = Decimal("24.00")
    host_ram_gib = Decimal("64.00")
    vcpu = 16
    fp16_tflops = Decimal("82.60")
    ask_per_device_hour = Decimal("0.400000")
    price_floor = Decimal("0.100000")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return resource_create(**kwargs)


def job_spec(**overrides) -> dict:
    """A valid job spec as the submit serializer validates it (Decimals, an aware deadline)."""
    spec = {
        "kind": JobRequest.Kind.INFERENCE,
        "model_name": "llama-2-7b",
        "params_billion": Decimal("7.000"),
        "quant_bits": 16,
        "context_length": 4096,
        "batch_size": 1,
        "workload_tokens": 1_000_000,
        "device_class": "GPU",
        "max_price_per_device_hour": Decimal("1.000000"),
        "budget": Decimal("10.000000"),
        "deadline": NOW + timedelta(days=1),
        "region": "eu-west",
    }
    spec.update(overrides)
    return spec


def job_submit(*, consumer: User, now=NOW, idempotency_key: str | None = None, **overrides) -> JobRequest:
    """Submit a job through the service (the consumer must be funded); returns the job."""
    job, _ = job_request_submit(
        consumer=consumer, spec=job_spec(**overrides), now=now, idempotency_key=idempotency_key
    )
    return job


def job_body(**overrides) -> dict:
    """A valid JSON body for POST /api/v1/jobs, due a day after the real clock (the API's `now`)."""
    body = {
        "kind": "INFERENCE",
        "model_name": "llama-2-7b",
        "params_billion": "7",
        "quant_bits": 4,
        "context_length": 4096,
        "batch_size": 1,
        "workload_tokens": 1_000_000,
        "max_price_per_device_hour": "1.00",
        "budget": "10.00",
        "deadline": (timezone.now() + timedelta(days=1)).isoformat(),
        "latency_sla_ms": 200,
        "region": "eu-west",
    }
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not None}


def resource_body(**overrides) -> dict:
    """A valid JSON body for POST /api/v1/resources."""
    body = {
        "device_class": "GPU",
        "model_name": "RTX 3080",
        "device_count": 2,
        "memory_per_device_gib": "10.00",
        "host_ram_gib": "32",
        "vcpu": 8,
        "fp16_tflops": "29.77",
        "interconnect": "PCIe4",
        "ask_per_device_hour": "0.25",
        "price_floor": "0.10",
    }
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not None}

"""`cpx_seed` creates a realistic demo population: edge providers with consumer GPUs and
Jetson-class boards, edge servers, cloud spill-over, funded consumers and a mix of LLM jobs.
Safe to run twice (existing users are kept). Prints one API key per role for trying the API."""

import random
from datetime import timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from market.models import BrokerAppointment, JobRequest, Provider, User
from market.services.accounts import api_key_create
from market.services.brokers import broker_appoint
from market.services.jobs import job_request_submit
from market.services.ledger import ledger_deposit
from market.services.placement import Unservable
from market.services.providers import provider_register, resource_create

# (username, display name, tier, region, site, lat, lon, [(class, model, count, mem GiB, ram, vcpu, tflops,
#  speed, interconnect, ask $/device-hour)])
PROVIDERS = [
    (
        "ana-rig",
        "Ana's gaming rig",
        "END",
        "eu-west",
        "Lisbon",
        38.72,
        -9.14,
        [("GPU", "RTX 4090", 1, 24, 64, 16, 82.6, 1.6, "PCIe4", "0.42")],
    ),
    (
        "bo-homelab",
        "Bo's homelab",
        "END",
        "eu-central",
        "Berlin",
        52.52,
        13.40,
        [
            ("GPU", "RTX 3080", 2, 10, 64, 12, 29.8, 0.8, "PCIe4", "0.18"),
            ("GPU", "RTX 3060", 1, 12, 32, 8, 12.7, 0.5, "PCIe4", "0.09"),
        ],
    ),
    (
        "chen-jetsons",
        "Chen's Jetson cluster",
        "END",
        "ap-south",
        "Bengaluru",
        12.97,
        77.59,
        [("GPU", "Jetson AGX Orin 64GB", 4, 64, 0, 12, 10.6, 0.3, "Ethernet", "0.07")],
    ),
    (
        "dara-studio",
        "Dara Studio workstation",
        "END",
        "us-east",
        "New York",
        40.71,
        -74.00,
        [("GPU", "RTX A6000", 2, 48, 256, 32, 38.7, 1.0, "NVLink", "0.55")],
    ),
    (
        "edge-lyon",
        "Lyon metro edge site",
        "EDGE",
        "eu-west",
        "Lyon",
        45.76,
        4.84,
        [
            ("GPU", "NVIDIA L4", 4, 24, 192, 48, 30.3, 1.0, "PCIe4", "0.38"),
            ("NPU", "Hailo-8 card", 8, 4, 64, 16, 13.0, 0.2, "PCIe3", "0.03"),
        ],
    ),
    (
        "edge-austin",
        "Austin 5G MEC",
        "EDGE",
        "us-west",
        "Austin",
        30.27,
        -97.74,
        [("GPU", "NVIDIA T4", 8, 16, 256, 64, 65.0, 0.6, "PCIe3", "0.21")],
    ),
    (
        "edge-tokyo",
        "Tokyo edge PoP",
        "EDGE",
        "ap-east",
        "Tokyo",
        35.68,
        139.69,
        [("GPU", "NVIDIA L40S", 4, 48, 512, 64, 362.0, 2.2, "PCIe4", "0.95")],
    ),
    (
        "cloud-spill-1",
        "Spillover Cloud (Frankfurt)",
        "CLOUD",
        "eu-central",
        "Frankfurt",
        50.11,
        8.68,
        [("GPU", "A100-80G", 8, 80, 1024, 96, 312.0, 3.0, "NVLink", "1.65")],
    ),
    (
        "cloud-spill-2",
        "Spillover Cloud (Virginia)",
        "CLOUD",
        "us-east",
        "Ashburn",
        39.04,
        -77.49,
        [
            ("GPU", "H100-80G SXM", 8, 80, 2048, 128, 989.0, 6.0, "NVLink", "2.90"),
            ("CPU", "EPYC 9654", 2, 384, 768, 192, 5.0, 0.1, "Ethernet", "0.60"),
        ],
    ),
]
CONSUMERS = [("acme-ai", "2500.00"), ("tinylabs", "400.00"), ("unibot", "150.00"), ("docsearch", "900.00")]
MODELS = [  # (name, params B, bits, context)
    ("llama-3.1-8b-instruct", "8", 4, 8192),
    ("mistral-7b-instruct", "7.2", 8, 4096),
    ("qwen2.5-14b", "14.7", 4, 8192),
    ("phi-3-mini", "3.8", 16, 4096),
    ("llama-3.1-70b-instruct", "70", 4, 4096),
    ("gemma-2-9b", "9.2", 16, 8192),
]
WALLETS = [f"0x{(0xC0FFEE00 + i):040x}" for i in range(len(PROVIDERS))]


class Command(BaseCommand):
    help = "Create the demo population (providers, resources, funded consumers, LLM jobs)."

    def add_arguments(self, parser):
        parser.add_argument("--jobs", type=int, default=40, help="jobs to submit (default 40)")
        parser.add_argument("--seed", type=int, default=7, help="random seed for the job mix")
        parser.add_argument("--quiet", action="store_true", help="do not print the demo API keys")

    @transaction.atomic
    def handle(self, *args, jobs, seed, quiet, **options):
        now = timezone.now()
        rng = random.Random(seed)
        operator = self._user("operator", User.Role.OPERATOR, staff=True)
        for index, (username, name, tier, region, site, lat, lon, resources) in enumerate(PROVIDERS):
            user = self._user(username, User.Role.PROVIDER)
            if Provider.objects.filter(user=user).exists():
                continue
            provider = provider_register(
                user=user,
                display_name=name,
                wallet_address=WALLETS[index],
                tier=tier,
                region=region,
                site=site,
                latitude=lat,
                longitude=lon,
            )
            for device_class, model, count, memory, ram, vcpu, tflops, speed, link, ask in resources:
                resource_create(
                    provider=provider,
                    device_class=device_class,
                    model_name=model,
                    device_count=count,
                    memory_per_device_gib=Decimal(memory),
                    host_ram_gib=Decimal(ram),
                    vcpu=vcpu,
                    fp16_tflops=Decimal(str(tflops)),
                    speed_factor=Decimal(str(speed)),
                    interconnect=link,
                    ask_per_device_hour=Decimal(ask),
                    price_floor=(Decimal(ask) * Decimal("0.6")).quantize(Decimal("0.01")),
                    auto_pricing=index % 2 == 0,
                )
        consumers = []
        for username, funds in CONSUMERS:
            user = self._user(username, User.Role.CONSUMER)
            ledger_deposit(
                user=user, amount=Decimal(funds), now=now, reference=f"seed:{username}", memo="seed funds"
            )
            consumers.append(user)
        self._broker(now, principals=[consumers[1], User.objects.get(username=PROVIDERS[1][0])])
        refused = 0
        for number in range(jobs):
            consumer = rng.choice(consumers)
            key = f"seed-{seed}-{number}"
            name, params, bits, context = rng.choice(MODELS)
            kind = rng.choices(["INFERENCE", "FINE_TUNE", "TRAINING"], weights=[7, 2, 1])[0]
            spec = {
                "kind": kind,
                "model_name": name,
                "params_billion": Decimal(params),
                "quant_bits": bits,
                "context_length": context,
                "batch_size": rng.choice([1, 1, 2, 4]),
                "device_class": "GPU",
                "max_price_per_device_hour": Decimal(str(round(rng.uniform(0.1, 2.5), 2))),
                "budget": Decimal(str(round(rng.uniform(2, 40), 2))),
                "deadline": now + timedelta(hours=rng.choice([2, 6, 24, 72])),
                "region": rng.choice(["eu-west", "eu-central", "us-east", "us-west", "ap-south"]),
                "latency_sla_ms": rng.choice([None, 50, 120, 250]),
            }
            if kind == "INFERENCE":
                spec["workload_tokens"] = rng.choice([50_000, 200_000, 1_000_000, 5_000_000])
            else:
                spec["workload_device_hours"] = Decimal(str(rng.choice([0.5, 2, 8])))
            if spec["latency_sla_ms"] is None:
                del spec["latency_sla_ms"]
            if not JobRequest.objects.filter(consumer=consumer, idempotency_key=key).exists():
                try:
                    job_request_submit(consumer=consumer, spec=spec, now=now, idempotency_key=key)
                except Unservable:
                    refused += 1  # a random spec no seeded resource could ever run: CPX refuses it
        self.stdout.write(
            self.style.SUCCESS(
                f"seeded {len(PROVIDERS)} providers, {len(CONSUMERS)} consumers, {jobs - refused} jobs "
                f"({refused} refused as unservable) "
                "(operator login: operator / operator-operator)"
            )
        )
        if not quiet:
            for user, role in [
                (operator, "operator"),
                (consumers[0], "consumer"),
                (User.objects.get(username="ana-rig"), "provider"),
            ]:
                _, raw = api_key_create(user=user, role=role, now=now, name="demo")
                self.stdout.write(f"  {role:9} key for {user.username}: {raw}")

    def _broker(self, now, *, principals):
        """A demo broker (MECM, issue 12) appointed by one consumer and one provider at 2 %."""
        broker = self._user("edge-broker", User.Role.BROKER)
        for principal in principals:
            if not BrokerAppointment.objects.filter(principal=principal, status="ACTIVE").exists():
                broker_appoint(principal=principal, broker_username=broker.username, fee_rate="0.02", now=now)

    def _user(self, username, role, staff=False):
        user, created = User.objects.get_or_create(
            username=username, defaults={"role": role, "is_staff": staff, "is_superuser": staff}
        )
        if created:
            # Demo passwords are the username repeated: never use cpx_seed on a real deployment.
            user.set_password(f"{username}-{username}")
            user.save(update_fields=["password"])
        return user

"""The operator market dashboard over 1,000 rounds: server time per render (Django test client, so
no network and no browser: the request/response cycle in process) and the queries it makes.

A fresh SQLite database in a temporary directory (the embedded default; DATABASE_URL is ignored so a
bench never writes into a real database) holds 1,000 CLEARED rounds, each with prices in 12
resource classes, timings, welfare and gap, and a 20 kB snapshot (which the dashboard must not
load); 30 providers with 60 listed GPUs, 200 queued jobs in the book, 400 leases. The dashboard is
rendered with every round charted (?rounds=1000) and with the default window (200), warm, REPEAT
times each. Target (issue 6): under 300 ms for 1,000 rounds.

Usage: .venv/bin/python bench/dashboard.py [--rounds 1000] [--repeat 15]
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_MS = 300.0


def setup_django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench-dashboard.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["CPX_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def populate(*, rounds: int, rng: random.Random):
    from django.utils import timezone
    from eth_utils import to_checksum_address

    from auctions.models import Lease, Round
    from market.models import Provider, User
    from market.services.jobs import job_request_submit
    from market.services.ledger import ledger_deposit
    from market.services.providers import provider_register, resource_create

    now = timezone.now()
    regions = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east"]
    classes = [f"GPU/{tier}G/{region}" for tier in (16, 24) for region in regions]
    providers, resources = [], []
    for index in range(30):
        user = User.objects.create(username=f"bench-provider-{index}", role=User.Role.PROVIDER)
        provider = provider_register(
            user=user,
            display_name=f"Bench site {index}",
            wallet_address=to_checksum_address(f"0x{index + 1:040x}"),
            region=regions[index % len(regions)],
        )
        providers.append(provider)
        for _ in range(2):
            resources.append(
                resource_create(
                    provider=provider,
                    device_class="GPU",
                    model_name="RTX 4090",
                    device_count=2,
                    memory_per_device_gib=Decimal("24"),
                    host_ram_gib=Decimal("64"),
                    vcpu=16,
                    fp16_tflops=Decimal("82.6"),
                    ask_per_device_hour=Decimal(str(round(rng.uniform(0.2, 1.2), 2))),
                    price_floor=Decimal("0.1"),
                )
            )
    Provider.objects.update(last_heartbeat_at=now)
    consumer = User.objects.create(username="bench-consumer", role=User.Role.CONSUMER)
    ledger_deposit(user=consumer, amount=Decimal("100000"), now=now)
    jobs = []
    for number in range(200):
        spec = {
            "kind": "INFERENCE",
            "model_name": "llama-3.1-8b-instruct",
            "params_billion": Decimal("8"),
            "quant_bits": 4,
            "context_length": 4096,
            "batch_size": 1,
            "workload_tokens": 100_000,
            "device_class": "GPU",
            "max_price_per_device_hour": Decimal(str(round(rng.uniform(0.1, 2.0), 2))),
            "budget": Decimal("5"),
            "deadline": now + timedelta(days=1),
            "region": regions[number % len(regions)],
        }
        jobs.append(job_request_submit(consumer=consumer, spec=spec, now=now)[0])
    start = now - timedelta(seconds=5 * rounds)
    snapshot = "x" * 20_000
    made = Round.objects.bulk_create(
        [
            Round(
                status=Round.Status.CLEARED,
                active_slot=None,
                opened_at=start + timedelta(seconds=5 * i),
                cleared_at=start + timedelta(seconds=5 * i + 1),
                snapshot=snapshot,
                snapshot_sha256=f"{i:064x}",
                result={"books": []},
                result_sha256=f"{i + 1:064x}",
                welfare=rng.uniform(0, 20),
                lp_bound=rng.uniform(20, 22),
                optimality_gap=rng.uniform(0, 0.05),
                jobs_in_book=rng.randint(10, 300),
                resources_in_book=60,
                jobs_matched=rng.randint(0, 40),
                timings_ms={
                    "snapshot": rng.uniform(1, 5),
                    "clear": rng.uniform(2, 40),
                    "write": rng.uniform(1, 9),
                },
                prices={
                    key: {
                        "buyer_price": round(rng.uniform(0.2, 2.0), 4),
                        "seller_price": round(rng.uniform(0.2, 1.5), 4),
                        "traded": rng.randint(0, 6),
                    }
                    for key in classes
                },
            )
            for i in range(rounds)
        ],
        batch_size=500,
    )
    Lease.objects.bulk_create(
        [
            Lease(
                round=made[i % len(made)],
                job=jobs[i % len(jobs)],
                resource=resources[i % len(resources)],
                provider=resources[i % len(resources)].provider,
                devices=1,
                resource_class=classes[i % len(classes)],
                unit_price_paid=Decimal("0.8"),
                unit_price_received=Decimal("0.6"),
                max_device_hours=Decimal("5"),
                expected_device_hours=Decimal("0.5"),
                status=Lease.Status.COMPLETED if i >= len(jobs) else Lease.Status.FAILED,
                close_reason="COMPLETED" if i >= len(jobs) else "UNSTABLE",
                dispatched_at=now,
            )
            for i in range(400)
        ]
    )
    return User.objects.create(username="bench-operator", role=User.Role.OPERATOR, is_staff=True)


def measure(client, url: str, *, repeat: int) -> tuple[list[float], int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # warm: templates compiled, caches filled
    assert response.status_code == 200, response.status_code
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    return timings, len(queries), len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpx-bench-dashboard-") as workdir:
        setup_django(Path(workdir))
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()
        started = time.perf_counter()
        operator = populate(rounds=args.rounds, rng=random.Random(6))
        print(
            f"populated {args.rounds} rounds, 60 resources, 200 queued jobs "
            f"in {time.perf_counter() - started:.1f} s"
        )
        client = Client()
        client.force_login(operator)
        print(f"{'page':34} {'min ms':>8} {'median':>8} {'max':>8} {'queries':>8} {'kB':>6}")
        verdicts = []
        for label, url in (
            (f"market dashboard, {args.rounds} rounds", f"/ops/market/?rounds={args.rounds}"),
            ("market dashboard, default 200", "/ops/market/"),
            ("live partial (polled every 2 s)", "/ops/market/live/"),
            ("rounds list", "/ops/rounds/"),
        ):
            timings, queries, size = measure(client, url, repeat=args.repeat)
            print(
                f"{label:34} {min(timings):8.1f} {statistics.median(timings):8.1f} {max(timings):8.1f} "
                f"{queries:8d} {size / 1024:6.0f}"
            )
            verdicts.append((label, statistics.median(timings)))
        median = verdicts[0][1]
        print(
            f"target: the dashboard over {args.rounds} rounds under {TARGET_MS:g} ms server time — "
            f"median {median:.1f} ms: {'met' if median < TARGET_MS else 'NOT met'}"
        )


if __name__ == "__main__":
    main()

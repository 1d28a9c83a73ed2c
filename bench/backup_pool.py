#!/usr/bin/env python
"""Time to restart a failed job: from the backup pool against waiting for the next round, side by side.

    .venv/bin/python bench/backup_pool.py [--trials 8] [--interval 5.0] [--json]

A fresh SQLite database in a temporary directory (the embedded default; DATABASE_URL is ignored so a
bench never writes into a real database). Each trial, alternating the two arms so that machine load
hits both alike:

1. three single-GPU providers come online (asks 0.10, 0.20, 0.30) and a consumer submits a job; a
   round matches it to the cheapest, whose agent accepts it; a second round runs. In the `pool` arm the
   job asked for a standby (`standby=true`), so the second round reserves the 0.20 GPU for it and
   escrows the fee; in the `round` arm it did not, and the second round reserves nothing.
2. the round beat starts as in production: a round every --interval seconds (CPX_ROUND_INTERVAL_S,
   default 5 s), the first one a uniformly random part of an interval after the failure (a provider
   fails at no particular moment of the beat);
3. the two other providers' agents wait for offers on the offer hub (the waiters of
   `GET /api/v1/agent/offers`, in process: no HTTP hop, which bench/agents.py measures), and the
   primary's agent fails its lease (PROVIDER_FAULT) at t0;
4. restart time = t0 → an agent holds a lease of the job (woken by the offer channel, `lease_poll`).
   Failure detection (an agent's report here; the sweeper's heartbeat timeout otherwise) precedes t0
   and is the same for both arms.

Prints min / median / max of the restart time per arm and the ratio of the medians. The clearing
rule is `per_class` (one job per round: under `depth` a lone job would buy at the posted price its
first round set, which the dearer providers do not take).
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(workdir: Path, interval: float) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench-backup-pool.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["CPX_LOG_LEVEL"] = "WARNING"
    os.environ["REDIS_URL"] = ""
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["CPX_CLEARING_RULE"] = "per_class"
    os.environ["CPX_BACKUP_POOL_POLICY"] = "opt_in"
    os.environ["CPX_ROUND_INTERVAL_S"] = str(interval)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


class Beat(threading.Thread):
    """Clears a round every `interval` seconds, the first after `first` seconds (the Celery beat + worker)."""

    def __init__(self, *, first: float, interval: float):
        super().__init__(daemon=True)
        self.first, self.interval = first, interval
        self.stop = threading.Event()
        self.rounds = 0

    def run(self):
        from django.db import connection
        from django.utils import timezone

        from auctions.services.rounds import RoundBusy, round_clear, round_open

        delay = self.first
        while not self.stop.wait(delay):
            now = timezone.now()
            try:
                round_clear(round_id=round_open(now=now).pk, now=now)
                self.rounds += 1
            except RoundBusy:
                pass
            delay = self.interval
        connection.close()


class Agents(threading.Thread):
    """The waiting agents of some providers: woken by the offer hub, they take their offers
    (`lease_poll`) and note when one of them holds a lease of `job_id`."""

    def __init__(self, *, providers: list, job_id: int, timeout: float):
        super().__init__(daemon=True)
        self.providers, self.job_id, self.timeout = providers, job_id, timeout
        self.held_at: float | None = None
        self.holder = None
        self.registered = threading.Event()

    def run(self):
        from django.db import connection
        from django.utils import timezone

        from auctions.services.leases import lease_poll

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and self.held_at is None:
            asyncio.run(self._wait(deadline))
            for provider in self.providers:
                leases = lease_poll(provider=provider, now=timezone.now())
                if any(lease.job_id == self.job_id for lease in leases):
                    self.held_at = time.perf_counter()
                    self.holder = provider
                    break
        connection.close()

    async def _wait(self, deadline: float) -> None:
        """Until the offer hub wakes one of the providers (as the ASGI channel's waiter does)."""
        from auctions.services.offers import offer_hub

        entries = [(p.pk, offer_hub.register(p.pk)) for p in self.providers]
        self.registered.set()
        try:
            waits = [asyncio.ensure_future(entry[1].wait()) for _, entry in entries]
            await asyncio.wait(
                waits, timeout=max(0.0, deadline - time.monotonic()), return_when="FIRST_COMPLETED"
            )
            for wait in waits:
                wait.cancel()
        finally:
            for pk, entry in entries:
                offer_hub.unregister(pk, entry)


def online_resource(ask: str, *, tag: str):
    from django.utils import timezone
    from eth_utils import to_checksum_address

    from market.models import Provider, User
    from market.services.providers import provider_register, resource_create

    user = User.objects.create(username=f"bench-{tag}", role=User.Role.PROVIDER)
    provider = provider_register(
        user=user,
        display_name=f"Bench {tag}",
        wallet_address=to_checksum_address("0x" + os.urandom(20).hex()),
        region="eu-west",
    )
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=timezone.now())
    return resource_create(
        provider=provider,
        device_class="GPU",
        model_name="RTX 3080",
        device_count=1,
        memory_per_device_gib=Decimal("24"),
        host_ram_gib=Decimal("32"),
        vcpu=8,
        fp16_tflops=Decimal("82.6"),
        ask_per_device_hour=Decimal(ask),
        price_floor=Decimal("0"),
    )


def trial(*, index: int, arm: str, interval: float, rng: random.Random) -> float:
    """One failure and restart; returns seconds from the failure to an agent holding the job."""
    from datetime import timedelta

    from django.utils import timezone

    from auctions.models import Lease
    from auctions.services.leases import lease_accept, lease_complete, lease_fail, lease_poll
    from auctions.services.rounds import round_clear, round_open
    from market.models import JobRequest, Provider, Resource, User
    from market.services.jobs import job_request_submit
    from market.services.ledger import ledger_deposit

    now = timezone.now()
    primary, standby, third = (
        online_resource(ask, tag=f"{index}-{n}") for n, ask in enumerate(("0.10", "0.20", "0.30"))
    )
    consumer = User.objects.create(username=f"bench-consumer-{index}", role=User.Role.CONSUMER)
    ledger_deposit(user=consumer, amount=Decimal("100"), now=now)
    job, _ = job_request_submit(
        consumer=consumer,
        spec={
            "kind": JobRequest.Kind.INFERENCE,
            "model_name": "llama-2-7b",
            "params_billion": Decimal("7"),
            "quant_bits": 16,
            "context_length": 4096,
            "workload_tokens": 1_000_000,
            "device_class": "GPU",
            "max_price_per_device_hour": Decimal("1"),
            "budget": Decimal("10"),
            "deadline": now + timedelta(days=1),
            "region": "eu-west",
            "standby": arm == "pool",
        },
        now=now,
    )
    round_clear(round_id=round_open(now=now).pk, now=now)
    (lease,) = lease_poll(provider=primary.provider, now=timezone.now())
    lease_accept(provider=primary.provider, lease_id=lease.pk, now=timezone.now())
    now = timezone.now()
    round_clear(round_id=round_open(now=now).pk, now=now)
    assert job.standbys.filter(status="HELD").exists() == (arm == "pool"), "the second round's standby"

    agents = Agents(providers=[standby.provider, third.provider], job_id=job.pk, timeout=interval * 3 + 10)
    agents.start()
    agents.registered.wait()
    beat = Beat(first=rng.uniform(0, interval), interval=interval)
    t0 = time.perf_counter()
    beat.start()
    lease_fail(
        provider=primary.provider,
        lease_id=lease.pk,
        reason="PROVIDER_FAULT",
        detail="bench",
        now=timezone.now(),
    )
    agents.join()
    beat.stop.set()
    beat.join()
    if agents.held_at is None:
        raise SystemExit(f"trial {index} ({arm}): no agent got the job")
    elapsed = agents.held_at - t0
    # Finish the job on the agent that took it, and take this trial's providers off the market.
    taken = Lease.objects.get(job=job, status=Lease.Status.DISPATCHED)
    lease_accept(provider=agents.holder, lease_id=taken.pk, now=timezone.now())
    lease_complete(
        provider=agents.holder,
        lease_id=taken.pk,
        tokens_in=1,
        tokens_out=1,
        device_seconds=Decimal("0"),
        now=timezone.now(),
    )
    Resource.objects.filter(pk__in=[primary.pk, standby.pk, third.pk]).update(status=Resource.Status.RETIRED)
    Provider.objects.filter(pk__in=[primary.provider_id, standby.provider_id, third.provider_id]).update(
        last_heartbeat_at=now - timedelta(days=1)
    )
    return elapsed


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per arm")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        setup_django(Path(workdir), args.interval)
        times: dict[str, list[float]] = {"pool": [], "round": []}
        for index in range(args.trials):
            for arm in ("pool", "round") if index % 2 == 0 else ("round", "pool"):
                times[arm].append(
                    trial(index=index * 2 + (arm == "round"), arm=arm, interval=args.interval, rng=rng)
                )
        from django.db import connections

        connections.close_all()
    figures = {arm: summary(values) for arm, values in times.items()}
    ratio = figures["round"]["median"] / figures["pool"]["median"]
    if args.json:
        print(json.dumps({"interval_s": args.interval, "arms": figures, "round_over_pool_median": ratio}))
        return 0
    print(f"restart after a provider failure, {args.trials} trials per arm, a round every {args.interval} s")
    print(f"{'arm':<28}{'min':>10}{'median':>10}{'max':>10}")
    labels = {"pool": "backup pool (standby)", "round": "next round (no standby)"}
    for arm in ("pool", "round"):
        f = figures[arm]
        print(
            f"{labels[arm]:<28}{f['min'] * 1000:>8.1f}ms{f['median'] * 1000:>8.1f}ms{f['max'] * 1000:>8.1f}ms"
        )
    print(f"next round / backup pool (medians): {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

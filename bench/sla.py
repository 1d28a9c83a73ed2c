"""SLA breaches detected against breaches injected (issue 12, item 5), through CPX's own services.

A fresh SQLite database (a temporary directory; DATABASE_URL is ignored) holds --leases leases, one
per simulated provider, each job with the same stated terms: p95 RTT ≤ 150 ms, complete within 2 h
of the round, minimum verified quality 0.9. Every simulated provider's agent answers --probes
latency probes through the real probe services (auctions.services.sla: a signed token issued, its
echo recorded RTT = echo time − send time) over a link with a log-normal RTT (median 40 ms) and
honest noise (3 % of probes spike by 200–600 ms). Seeded injections:

- latency: 20 % of providers degrade: 35 % of their probes are 150–450 ms slower;
- deadline: 10 % finish 10–60 min after complete_by;
- quality: 15 % fabricate 4 of 20 batch answers; the spot check re-runs k = 3 of the 20 (the
  verification rule's sample), so a fabricated lease is caught with probability 1 − C(16,3)/C(20,3).

Each lease is then completed (`lease_complete`: settlement and the SLA breaches, charged in the
ledger) and its check decided (`lease_sla_quality`). Printed: per kind, injected, detected,
precision and recall. For latency, CPX's rule (auctions.mechanisms.sla: the p95 exceeds the bound
at 99 % confidence, a binomial test on the samples over it) on all the probes, and re-applied to
the first 20 and 10; beside three naive rules on the same samples: the sample p95 over the bound,
any probe over it, the mean over it. Then the penalties charged to honest and to injected
providers, and whether the ledger balances.

Usage: .venv/bin/python bench/sla.py [--leases 200] [--probes 40] [--seed 7]
"""

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOUND_MS = 150


def setup_django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench-sla.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["CPX_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def rtt_samples(rng: random.Random, probes: int, degraded: bool) -> list[float]:
    samples = []
    for _ in range(probes):
        rtt = 40.0 * math.exp(rng.gauss(0, 0.3))
        if rng.random() < 0.03:
            rtt += rng.uniform(200, 600)  # honest noise: a spike anyone's link has now and then
        if degraded and rng.random() < 0.35:
            rtt += rng.uniform(150, 450)
        samples.append(rtt)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=200)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    # In memory where there is a tmpfs: the figures are detection rates, not disk speed.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as workdir:
        setup_django(Path(workdir))
        return run(args)


def run(args) -> int:
    from django.utils import timezone

    from auctions.mechanisms.sla import breaches, detection_scores, percentile
    from auctions.models import Lease, LeaseSla, Round
    from auctions.services.leases import lease_accept, lease_complete
    from auctions.services.sla import (
        job_terms_set,
        lease_sla_copy,
        lease_sla_quality,
        probe_issue,
        probe_record,
    )
    from market.models import JobRequest
    from market.selectors import ledger_is_balanced
    from market.services.jobs import job_request_transition
    from tests.factories import ConsumerFactory, ResourceFactory, job_submit

    rng = random.Random(args.seed)
    t0 = timezone.now().replace(microsecond=0)
    complete_by = t0 + timedelta(hours=2)
    terms = {"latency_p95_ms": BOUND_MS, "complete_by": complete_by.isoformat(), "min_quality": "0.9"}
    round_obj = Round.objects.create(
        status=Round.Status.CLEARED, active_slot=None, opened_at=t0, cleared_at=t0
    )
    injected = {"latency": set(), "deadline": set(), "quality": set()}
    samples_of, leases = {}, []
    for n in range(args.leases):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = job_submit(
            consumer=consumer,
            now=t0,
            budget=Decimal("10"),
            requested_device_count=1,
            deadline=t0 + timedelta(days=1),
        )
        job_terms_set(consumer=consumer, job_id=job.pk, data=terms, now=t0)
        job_request_transition(
            job=job, from_statuses=(JobRequest.Status.QUEUED,), to=JobRequest.Status.MATCHED, now=t0
        )
        resource = ResourceFactory()
        lease = Lease.objects.create(
            round=round_obj,
            job=job,
            resource=resource,
            provider=resource.provider,
            devices=1,
            resource_class="GPU/24G/eu-west",
            unit_price_paid=Decimal("0.800000"),
            unit_price_received=Decimal("0.500000"),
            max_device_hours=Decimal("12.5"),
            expected_device_hours=Decimal("1"),
            dispatched_at=t0,
        )
        lease_sla_copy(leases=[lease])
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=t0)
        for kind, share in (("latency", 0.20), ("deadline", 0.10), ("quality", 0.15)):
            if rng.random() < share:
                injected[kind].add(n)
        samples = rtt_samples(rng, args.probes, n in injected["latency"])
        samples_of[n] = samples
        for i, rtt in enumerate(samples):
            sent = t0 + timedelta(seconds=60 * i + 1)
            token = probe_issue(provider=lease.provider, now=sent)
            probe_record(
                provider=lease.provider, token=token, now=sent + timedelta(microseconds=int(rtt * 1000))
            )
        leases.append(lease)

    detected = {"latency": set(), "deadline": set(), "quality": set()}
    for n, lease in enumerate(leases):
        late = n in injected["deadline"]
        end = complete_by + timedelta(minutes=rng.uniform(10, 60)) if late else t0 + timedelta(minutes=90)
        lease_complete(
            provider=lease.provider,
            lease_id=lease.pk,
            tokens_in=10,
            tokens_out=10,
            device_seconds=Decimal("1800"),
            now=end,
        )
        # The check re-runs 3 of 20 answers; 4 of them fabricated when quality failure is injected.
        wrong = set(rng.sample(range(20), 4)) if n in injected["quality"] else set()
        checked = rng.sample(range(20), 3)
        mismatched = sum(1 for i in checked if i in wrong)
        lease_sla_quality(lease=lease, checked=3, mismatched=mismatched, now=end + timedelta(minutes=5))
        for breach in LeaseSla.objects.get(lease=lease).breaches:
            detected[breach["kind"]].add(n)

    def p95_rule(first: int) -> set:
        """CPX's own rule (the engine's `breaches`) on each lease's first `first` samples only."""
        return {
            n
            for n, s in samples_of.items()
            if any(
                b.kind == "latency"
                for b in breaches(
                    terms=terms, rtt_ms=s[:first], late_by_s=None, quality=None, default_rate=0.1
                )
            )
        }

    naive_p95 = {n for n, s in samples_of.items() if percentile(s, 95) > BOUND_MS}
    naive_any = {n for n, s in samples_of.items() if max(s) > BOUND_MS}
    naive_mean = {n for n, s in samples_of.items() if statistics.fmean(s) > BOUND_MS}
    print(f"{args.leases} leases, {args.probes} RTT probes each through the probe services, seed {args.seed}")
    print(f"{'breach':36s} {'injected':>8s} {'detected':>8s} {'precision':>9s} {'recall':>7s}")
    rows = [
        (f"latency, CPX test, {args.probes} probes", injected["latency"], detected["latency"]),
        ("latency, CPX test, first 20 probes", injected["latency"], p95_rule(20)),
        ("latency, CPX test, first 10 probes", injected["latency"], p95_rule(10)),
        ("latency, naive: sample p95 > bound", injected["latency"], naive_p95),
        ("latency, naive: any probe > bound", injected["latency"], naive_any),
        ("latency, naive: mean > bound", injected["latency"], naive_mean),
        ("deadline (completion time)", injected["deadline"], detected["deadline"]),
        ("quality (spot check, k=3 of 20)", injected["quality"], detected["quality"]),
    ]
    for name, inj, det in rows:
        s = detection_scores(inj, det)
        print(f"{name:36s} {s['injected']:8d} {s['detected']:8d} {s['precision']:9.2f} {s['recall']:7.2f}")
    expected = 1 - math.comb(16, 3) / math.comb(20, 3)
    print(f"quality recall expected from the sample: {expected:.2f}")
    guilty = set().union(*injected.values())
    penalties = {row.lease_id: row.penalty for row in LeaseSla.objects.all()}
    ids = {n: lease.pk for n, lease in enumerate(leases)}
    honest_paid = sum((penalties[ids[n]] for n in ids if n not in guilty), Decimal(0))
    guilty_paid = sum((penalties[ids[n]] for n in ids if n in guilty), Decimal(0))
    print(f"penalties charged: injected providers {guilty_paid}, honest providers {honest_paid}")
    print(f"ledger balanced: {ledger_is_balanced()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

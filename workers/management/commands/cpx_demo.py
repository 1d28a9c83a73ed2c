"""`python manage.py cpx_demo --rounds N`: the market moving, headless, then a summary.

Seeds the demo population if the database has no provider, then runs — in this process — the
web API, an embedded Celery worker, a simulated agent per provider (the real agent loop, simulate
backend, over HTTP) and consumer traffic. It sends `auctions.open_and_clear_round` and
`auctions.sweep_leases` through the worker every `--interval` seconds (the beat's schedule, made
countable) until N rounds have cleared, lets running leases finish (`--drain`), and prints: each
round's book, matches, welfare and clearing prices per class; jobs matched, completed and failed;
the money moved; whether the ledger balances. Exit status 1 when it does not.
"""

import json
import time
from io import StringIO

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from auctions.models import Lease
from contracts.demo import chain_report_lines, demo_chain_settle, demo_chain_setup
from market.models import Provider
from workers import tasks
from workers.embedded import EmbeddedCelery
from workers.simulation import ConsumerTraffic, SimulatedAgents, WebServer, market_summary, quiet_logs

TASK_TIMEOUT_S = 180


class Command(BaseCommand):
    help = "Run the market headless for N rounds (simulated agents and traffic) and print a summary."

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=5, help="rounds to clear (default 5)")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between rounds (default 2)")
        parser.add_argument(
            "--speedup", type=float, default=3600.0, help="simulated seconds per real second (default 3600)"
        )
        parser.add_argument(
            "--traffic-interval", type=float, default=0.5, help="mean seconds between new jobs (default 0.5)"
        )
        parser.add_argument(
            "--drain", type=float, default=30.0, help="seconds to let running leases finish (default 30)"
        )
        parser.add_argument("--seed-jobs", type=int, default=40, help="jobs cpx_seed submits if it seeds")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args, rounds, interval, speedup, traffic_interval, drain, seed_jobs, json, **options):
        if rounds < 1:
            raise CommandError("--rounds must be at least 1")
        say = (lambda *_: None) if json else self.stdout.write
        quiet_logs(options["verbosity"])
        if not Provider.objects.exists():
            call_command("cpx_seed", jobs=seed_jobs, quiet=True, stdout=StringIO())
            say(f"seeded the demo population ({seed_jobs} jobs)")
        # The in-process agents simulate this fast; the server bounds simulated metering by it.
        settings.CPX_SIMULATION_SPEEDUP = max(settings.CPX_SIMULATION_SPEEDUP, speedup)
        # The threaded demo server gives every connection a thread of its own: the long-poll caps,
        # which keep a fixed pool of threads (gunicorn) free for the rest of the API, would only
        # make the demo's agents wait.
        settings.CPX_AGENT_LONG_POLLS_TOTAL = max(settings.CPX_AGENT_LONG_POLLS_TOTAL, 1000)
        web = WebServer("127.0.0.1", 0).start()
        embedded = EmbeddedCelery(beat=False).start()
        quiet_logs(options["verbosity"])  # again: the worker's django.setup() re-applied LOGGING
        agents = SimulatedAgents(web.url, speedup=speedup, poll_wait_s=1.0, heartbeat_s=1.0)
        traffic = ConsumerTraffic(web.url, interval_s=traffic_interval)
        round_ids: list[int] = []
        chain = {"enabled": False}
        try:
            say(demo_chain_setup())  # on-chain settlement (issue 5): consumers funded on the chain
            agents.start(now=timezone.now())
            count = len(agents.agents)
            say(f"{count} SIMULATED provider agents on {web.url} (simulate backend, {speedup:g}×)")
            self._wait_for_heartbeats(agents, timeout_s=15)
            try:
                say(f"pricing: {self._run(tasks.update_prices)}")
            except Exception as error:  # the market clears on the asks it has; say so and go on
                say(f"pricing failed: {type(error).__name__}: {error}")
            traffic.start(now=timezone.now())
            while len(round_ids) < rounds:
                result = self._run(tasks.open_and_clear_round)
                self._run(tasks.sweep_leases)
                if result.get("status") in ("CLEARED", "FAILED"):
                    round_ids.append(result["round_id"])
                    say(
                        f"round {result['round_id']} {result['status']}: "
                        f"{result['jobs_matched']} jobs matched, welfare {result['welfare'] or 0:.4f}"
                    )
                else:
                    say(f"round not cleared: {result}")
                if len(round_ids) < rounds:
                    time.sleep(interval)
            traffic.stop(now=timezone.now())
            deadline = time.monotonic() + drain
            while self._active(round_ids) and time.monotonic() < deadline:
                time.sleep(min(1.0, interval))
                self._run(tasks.sweep_leases)
            chain = demo_chain_settle(self._run)  # batches → chain → claims → reconciliation
        finally:
            traffic.stop(now=timezone.now())
            agents.stop(now=timezone.now())
            embedded.stop()
            web.stop()
        summary = market_summary(round_ids=round_ids, job_ids=traffic.stats.job_ids)
        summary["traffic"] = {
            "submitted": traffic.stats.submitted,
            "refused": traffic.stats.refused,
            "top_ups": traffic.stats.top_ups,
        }
        summary["chain"] = chain
        if json:
            self.stdout.write(_json(summary))
        else:
            self.stdout.write(_report(summary) + "\n" + "\n".join(chain_report_lines(chain)))
        if not summary["ledger_balanced"]:
            raise CommandError("the ledger does not balance", returncode=1)

    @staticmethod
    def _run(task, **kwargs) -> dict:
        return task.delay(**kwargs).get(timeout=TASK_TIMEOUT_S)

    @staticmethod
    def _active(round_ids: list[int]) -> bool:
        return Lease.objects.filter(round_id__in=round_ids, status__in=Lease.ACTIVE).exists()

    @staticmethod
    def _wait_for_heartbeats(agents: SimulatedAgents, *, timeout_s: float) -> None:
        # A provider is in the book only once its agent has heartbeated.
        ids = [a.provider_id for a in agents.agents]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if Provider.objects.filter(pk__in=ids, last_heartbeat_at__isnull=False).count() == len(ids):
                return
            time.sleep(0.2)


def _json(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)


def _report(summary: dict) -> str:
    lines = ["", "CPX demo summary (agents and consumer traffic are SIMULATIONS)", ""]
    lines.append(f"rounds: {len(summary['rounds'])}")
    header = f"  {'round':>5}  {'status':8} {'jobs/res in book':>16}  {'matched':>7}  {'welfare':>10}"
    lines.append(header + "  prices")
    for r in summary["rounds"]:
        prices = "; ".join(
            f"{cls} buyer {_num(p['buyer'])} seller {_num(p['seller'])} ×{p['traded']}"
            for cls, p in r["prices"].items()
            if p["traded"]
        )
        book = f"{r['jobs_in_book']}/{r['resources_in_book']}"
        lines.append(
            f"  {r['id']:>5}  {r['status']:8} {book:>16}  {r['jobs_matched']:>7}  "
            f"{(r['welfare'] or 0):>10.4f}  {prices or '-'}"
        )
        if r["error"]:
            lines.append(f"         error: {r['error']}")
    jobs, leases, money, traffic = summary["jobs"], summary["leases"], summary["money"], summary["traffic"]
    lines += [
        "",
        f"jobs: matched {jobs['matched']}, completed {jobs['completed']}, failed {jobs['failed']}, "
        f"queued {jobs['queued']}   (by status: {jobs['by_status']})",
        f"leases: {leases['matched']} ({leases['simulated']} run by the simulation backend): completed "
        f"{leases['completed']}, still running {leases['running']}, failed {leases['failed']}, "
        f"reassigned {leases['reassigned']}",
        f"consumer traffic: {traffic['submitted']} jobs submitted over the API, "
        f"{traffic['refused']} refused, "
        f"{traffic['top_ups']} top-ups",
        f"money: paid to providers {money['paid_to_providers']}, platform fees and surplus "
        f"{money['platform_fees_and_surplus']}, SLA penalties {money['sla_penalties']}",
        f"ledger balanced: {'yes' if summary['ledger_balanced'] else 'NO'}",
    ]
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"

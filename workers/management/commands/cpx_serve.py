"""`python manage.py cpx_serve`: the whole exchange in one process — what `make demo` runs.

- the web app (Django behind a threaded WSGI server, the one runserver uses);
- an embedded Celery worker and beat (workers.embedded): rounds every CPX_ROUND_INTERVAL_S, lease
  sweeps every CPX_SWEEP_INTERVAL_S, pricing every CPX_PRICING_INTERVAL_S;
- a simulated agent per seeded provider: the real agent loop with the `simulate` backend, over
  HTTP against this server with a provider API key (a simulation, and labelled as one);
- consumer traffic: jobs submitted over the REST API over time.

Ctrl-C (or SIGTERM) shuts down in order: traffic, agents (a lease still running fails over at once),
beat and worker (after the task in hand), then the web server.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q
from django.utils import timezone

from auctions.models import Lease, Round
from contracts.demo import demo_chain_setup
from workers.embedded import EmbeddedCelery
from workers.simulation import ConsumerTraffic, SimulatedAgents, WebServer, quiet_logs
from workers.tasks import update_prices


class Command(BaseCommand):
    help = "Serve the exchange with an in-process Celery worker and beat, simulated agents and traffic."

    def add_arguments(self, parser):
        parser.add_argument(
            "addrport", nargs="?", default="127.0.0.1:8000", help="HOST:PORT (default 127.0.0.1:8000)"
        )
        parser.add_argument("--no-worker", action="store_true", help="no in-process worker and beat")
        parser.add_argument("--no-beat", action="store_true", help="in-process worker, but no beat")
        parser.add_argument("--no-agents", action="store_true", help="no simulated provider agents")
        parser.add_argument("--no-traffic", action="store_true", help="no simulated consumer traffic")
        parser.add_argument(
            "--traffic-interval", type=float, default=4.0, help="mean seconds between jobs (default 4)"
        )
        parser.add_argument(
            "--speedup",
            type=float,
            default=None,
            help="simulated seconds per real second (default CPX_SIMULATION_SPEEDUP)",
        )
        parser.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
        parser.add_argument("--access-log", action="store_true", help="log every HTTP request")

    def handle(self, *args, addrport, **options):
        host, _, port = addrport.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError("addrport is HOST:PORT, e.g. 127.0.0.1:8000")
        speedup = options["speedup"] or settings.CPX_SIMULATION_SPEEDUP
        # The in-process agents simulate this fast; the server bounds simulated metering by it.
        settings.CPX_SIMULATION_SPEEDUP = max(settings.CPX_SIMULATION_SPEEDUP, speedup)
        # The threaded demo server gives every connection a thread of its own: the long-poll caps,
        # which keep a fixed pool of threads (gunicorn) free for the rest of the API, would only
        # make the demo's agents wait.
        settings.CPX_AGENT_LONG_POLLS_TOTAL = max(settings.CPX_AGENT_LONG_POLLS_TOTAL, 1000)
        quiet_logs(options["verbosity"])
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        try:
            web = WebServer(host, int(port), access_log=options["access_log"]).start()
        except OSError as error:
            raise CommandError(f"cannot listen on {addrport}: {error}") from error
        embedded = agents = traffic = None
        try:
            self.stdout.write(f"CPX serving {web.url}/  (API {web.url}/api/v1/, docs {web.url}/api/docs/)")
            if not options["no_worker"]:
                embedded = EmbeddedCelery(beat=not options["no_beat"]).start()
                quiet_logs(options["verbosity"])  # again: the worker's django.setup() re-applied LOGGING
                broker = settings.CELERY_BROKER_URL.split("://")[0]
                interval = settings.CPX_ROUND_INTERVAL_S
                beat = "" if options["no_beat"] else f" + beat, a round every {interval:g} s"
                self.stdout.write(f"  Celery in process ({broker} broker): worker{beat}")
                self.stdout.write(f"  {demo_chain_setup()}")  # on-chain settlement (issue 5)
                # Quotes from the start, not one pricing interval later.
                update_prices.delay()
            if not options["no_agents"]:
                agents = SimulatedAgents(web.url, speedup=speedup).start(now=timezone.now())
                self.stdout.write(
                    f"  {len(agents.agents)} SIMULATED provider agents "
                    f"(simulate backend, speedup {speedup:g}×): "
                    + ", ".join(a.username for a in agents.agents)
                )
            if not options["no_traffic"]:
                traffic = ConsumerTraffic(web.url, interval_s=options["traffic_interval"]).start(
                    now=timezone.now()
                )
                self.stdout.write(
                    f"  SIMULATED consumer traffic: a job every ~{options['traffic_interval']:g} s "
                    f"from {len(traffic.consumers)} consumers"
                )
            self.stdout.write("Ctrl-C to stop.")
            while not stop.wait(options["status_every"]):
                self.stdout.write(self._status())
        finally:
            self.stdout.write("shutting down…")
            now = timezone.now()
            if traffic is not None:
                traffic.stop(now=now)
            if agents is not None:
                agents.stop(now=now)
            if embedded is not None:
                embedded.stop()
            web.stop()
            self.stdout.write("stopped.")

    def _status(self) -> str:
        latest = Round.objects.filter(status=Round.Status.CLEARED).order_by("-id").first()
        leases = Lease.objects.aggregate(
            running=Count("id", filter=Q(status__in=Lease.ACTIVE)),
            completed=Count("id", filter=Q(status=Lease.Status.COMPLETED)),
            failed_over=Count("id", filter=Q(status__in=[Lease.Status.FAILED, Lease.Status.REASSIGNED])),
        )
        round_text = (
            f"round {latest.pk}: {latest.jobs_matched}/{latest.jobs_in_book} matched, "
            f"welfare {latest.welfare:.4f}"
            if latest is not None and latest.welfare is not None
            else "no round cleared yet"
        )
        return (
            f"[{timezone.now():%H:%M:%S}] {round_text} | leases running {leases['running']}, "
            f"completed {leases['completed']}, failed/reassigned {leases['failed_over']}"
        )

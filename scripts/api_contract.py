"""Run schemathesis against the API as each role, from the schema the server publishes.

    python scripts/api_contract.py [--max-examples 15] [--roles operator,consumer] [--keep]

It creates a throwaway PostgreSQL database (`cpx_contract` on DATABASE_URL's server, default the
local one), migrates it, makes one user per role with an API key (the consumer funded, the provider
with a resource), starts gunicorn on a free loopback port, and runs

    schemathesis run http://127.0.0.1:PORT/api/schema/ --checks not_a_server_error,
        status_code_conformance, content_type_conformance, response_schema_conformance,
        negative_data_rejection, ignored_auth -H "Authorization: Bearer <key>" -n N --seed S

once per role. Each run's own summary is printed, then one line per role; the exit status is 1 when
any run failed. The server and the database are removed on every exit (unless --keep).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,negative_data_rejection,ignored_auth"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def recreate(url: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(database_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


SEED = """
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from market.models import Role, User
from market.services.accounts import api_key_create
from market.services.ledger import ledger_deposit
from market.services.providers import provider_register, resource_create

now = timezone.now()
keys = {}
for role in (Role.OPERATOR, Role.CONSUMER, Role.PROVIDER):
    user = User.objects.create_user(username=f"contract-{role}", role=role, is_staff=role == Role.OPERATOR)
    keys[role] = api_key_create(user=user, role=role, now=now, name="schemathesis")[1]
    if role == Role.CONSUMER:
        ledger_deposit(user=user, amount=Decimal("1000"), now=now, memo="contract run")
    if role == Role.PROVIDER:
        provider = provider_register(
            user=user, display_name="Contract edge", wallet_address="0x" + "ab" * 20, region="eu-west",
            tier="EDGE",
        )
        resource_create(
            provider=provider, device_class="GPU", model_name="RTX 4090", device_count=2,
            memory_per_device_gib=Decimal("24"), host_ram_gib=Decimal("64"), vcpu=16,
            fp16_tflops=Decimal("82.6"), ask_per_device_hour=Decimal("0.4"), price_floor=Decimal("0.1"),
        )
for role, key in keys.items():
    print(f"KEY {role} {key}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--roles", default="operator,consumer")
    parser.add_argument("--database", default="cpx_contract")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": database_url(base_url, args.database),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "CELERY_BROKER_URL": "memory://",
        "CPX_API_RATE": "1000000/min",
        "CPX_AGENT_LONG_POLL_S": "0",  # a generated wait=S must not hold a worker
        "CPX_SETTLEMENT_ON_CHAIN": "false",
        "CPX_LOG_LEVEL": "ERROR",
    }
    env.pop("REDIS_URL", None)
    recreate(base_url, args.database)
    server = None
    # The server's own log lines (every 4xx it answered) go to a file, not between the reports.
    server_log = Path(tempfile.gettempdir()) / "cpx-api-contract-server.log"
    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        seeded = subprocess.run(
            [*manage, "shell", "-c", SEED], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout
        keys = dict(line.split()[1:] for line in seeded.splitlines() if line.startswith("KEY "))
        log = server_log.open("w")
        server = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "-k",
                "gthread",
                "--workers",
                "2",
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                # URI length is the reverse proxy's limit in production (its 414 is not the API's
                # answer): here a generated query of any length reaches Django.
                "--limit-request-line",
                "0",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        schema_url = f"http://127.0.0.1:{port}/api/schema/"
        for _ in range(100):
            try:
                urllib.request.urlopen(schema_url, timeout=5)
                break
            except OSError:
                time.sleep(0.2)
        summaries = []
        for role in args.roles.split(","):
            print(f"== schemathesis as {role}", flush=True)
            started = time.monotonic()
            run = subprocess.run(
                [
                    str(BIN / "schemathesis"),
                    "run",
                    schema_url,
                    "--checks",
                    CHECKS,
                    "-H",
                    f"Authorization: Bearer {keys[role]}",
                    "--max-examples",
                    str(args.max_examples),
                    "--seed",
                    str(args.seed),
                    "--workers",
                    "2",
                    "--request-timeout",
                    "30",
                    "--suppress-health-check",
                    "all",
                ],
                cwd=ROOT,
                env={**os.environ, "NO_COLOR": "1", "COLUMNS": "110"},
                capture_output=True,
                text=True,
            )
            print(run.stdout[-12000:], run.stderr[-4000:], sep="\n", flush=True)
            summaries.append((role, run.returncode, round(time.monotonic() - started, 1)))
        print(f"== api contract summary (server log: {server_log})")
        for role, code, seconds in summaries:
            print(f"{role}: {'PASSED' if code == 0 else 'FAILED'} (schemathesis exit {code}, {seconds} s)")
        return 0 if all(code == 0 for _, code, _ in summaries) else 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            recreate(base_url, args.database, drop_only=True)


if __name__ == "__main__":
    sys.exit(main())

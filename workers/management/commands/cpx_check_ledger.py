"""`python manage.py cpx_check_ledger [--json]`: the ledger and lifecycle invariants, checked in SQL.

Runs every check of scripts/ledger_invariants.sql (double entry, no negative balance, conservation of
deposits, escrow of live and closed jobs, nothing paid twice or both paid and refunded, no live lease
on a closed job) and prints how many rows violate each. Exit status 1 when any does. PostgreSQL only
(the file is plain SQL for psql too); the checks read, they never write.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

INVARIANTS_SQL = Path(settings.BASE_DIR) / "scripts" / "ledger_invariants.sql"
_HEADER = re.compile(r"^-- check: (?P<name>[a-z_]+): (?P<what>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    sql: str


@dataclass(frozen=True)
class Outcome:
    name: str
    what: str
    violations: int
    sample: list


def invariant_checks(path: Path = INVARIANTS_SQL) -> list[Check]:
    """The checks of the file, in order: each `-- check: name: what` header and the SELECT after it."""
    text = path.read_text()
    headers = list(_HEADER.finditer(text))
    checks = []
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)]
        sql = "\n".join(line for line in body.splitlines() if not line.startswith("--")).strip().rstrip(";")
        checks.append(Check(header["name"], header["what"], sql))
    return checks


def invariants_run(checks: list[Check] | None = None) -> list[Outcome]:
    """Run each check on one snapshot (a read-only REPEATABLE READ transaction); violations per check."""
    outcomes = []
    outer = connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if not outer:  # inside a caller's transaction (a test's) its snapshot is the one there is
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for check in checks or invariant_checks():
            cursor.execute(check.sql)
            rows = cursor.fetchall()
            outcomes.append(Outcome(check.name, check.what, len(rows), [list(map(str, r)) for r in rows[:5]]))
    return outcomes


class Command(BaseCommand):
    help = "Check the ledger and lifecycle invariants in SQL (scripts/ledger_invariants.sql); exit 1 on any."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("cpx_check_ledger runs its SQL on PostgreSQL (DATABASE_URL=postgres://…).")
        outcomes = invariants_run()
        if options["json"]:
            self.stdout.write(json.dumps([asdict(o) for o in outcomes], indent=1))
        else:
            for outcome in outcomes:
                mark = "ok  " if not outcome.violations else "FAIL"
                self.stdout.write(f"{mark} {outcome.name}: {outcome.what} ({outcome.violations} violations)")
                for row in outcome.sample:
                    self.stdout.write(f"       {row}")
        if any(o.violations for o in outcomes):
            raise SystemExit(1)

"""The SQL invariants (scripts/ledger_invariants.sql, `cpx_check_ledger`) hold on a real market and
catch each kind of damage. PostgreSQL only: the file is PostgreSQL's SQL."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from auctions.models import Lease
from market.models import JobRequest, LedgerAccount
from tests.integration.pages import cleared_round_with_a_lease
from workers.management.commands.cpx_check_ledger import invariant_checks, invariants_run

pytestmark = [pytest.mark.services, pytest.mark.django_db]


def violated() -> dict[str, int]:
    return {o.name: o.violations for o in invariants_run() if o.violations}


class TestLedgerInvariants:
    def test_the_file_has_every_check_the_issue_names(self):
        names = [c.name for c in invariant_checks()]

        assert {
            "double_entry",
            "no_negative_balance",
            "conservation",
            "escrow_of_live_jobs",
            "paid_once",
            "not_paid_and_refunded",
            "no_live_lease_on_closed_job",
        } <= set(names)

    def test_hold_on_a_market_with_a_lease_and_catch_a_tampered_balance(self, require_postgres):
        _, job, _ = cleared_round_with_a_lease()
        clean = violated()

        LedgerAccount.objects.filter(kind="ESCROW", job=job).update(balance=Decimal("0.5"))

        assert clean == {}
        assert set(violated()) >= {"double_entry", "books_balance", "escrow_of_live_jobs", "conservation"}

    def test_catch_a_live_lease_on_a_closed_job(self, require_postgres):
        _, job, _ = cleared_round_with_a_lease()

        with connection.cursor() as cursor:  # what defect 2 left behind: the job closed, its lease not
            cursor.execute("UPDATE market_jobrequest SET status = 'CANCELLED' WHERE id = %s", [job.pk])

        assert Lease.objects.get(job=job).status == "DISPATCHED"
        assert JobRequest.objects.get(pk=job.pk).status == "CANCELLED"
        assert "no_live_lease_on_closed_job" in violated()

    def test_the_command_exits_1_on_a_violation(self, require_postgres, capsys):
        _, job, _ = cleared_round_with_a_lease()
        call_command("cpx_check_ledger")
        LedgerAccount.objects.filter(kind="ESCROW", job=job).update(balance=Decimal("0"))

        with pytest.raises(SystemExit) as exit_:
            call_command("cpx_check_ledger")

        assert exit_.value.code == 1
        assert "FAIL double_entry" in capsys.readouterr().out

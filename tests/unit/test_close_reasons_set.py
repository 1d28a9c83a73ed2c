"""Every close reason the lease model declares, and the provider's SUSPENDED status, is set by the
code (issue 12: declared reasons such as VERIFICATION_FAILED were never set). A reason nothing
writes fails this test; the test that shows each one written is named beside it."""

import re
from pathlib import Path

import pytest

from auctions.models import Lease

ROOT = Path(__file__).resolve().parents[2]
# Where each one is written, and the test that shows it.
WRITTEN_BY = {
    "COMPLETED": "lease_complete: tests/integration/test_leases.py",
    "OWNER": "job_request_cancel: tests/integration/test_leases.py",
    "PROVIDER_FAULT": "lease_fail, lease_sweep: tests/integration/test_leases.py",
    "UNSTABLE": "lease_sweep: tests/integration/test_leases.py",
    "DEADLINE": "lease_sweep: tests/integration/test_leases.py",
    "INSUFFICIENT_FUNDS": "jobs_refuse_uncovered: tests/integration/test_rounds.py",
    "VERIFICATION_FAILED": "verification_decide: tests/api/test_sla_api.py::TestVerificationFailed",
    "JOB_ERROR": "lease_fail: tests/integration/test_leases.py",
    "SLA_BREACH": "lease_sla_settle: tests/integration/test_sla.py::TestBreachesAtSettlement",
    "GANG": "gang_close_peers: tests/integration/test_gangs.py::TestGangLifecycle",
}


def _code() -> str:
    paths = [
        path
        for package in ("auctions", "market", "contracts", "workers")
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and path.name not in ("models.py", "models_sla.py")
    ]
    return "\n".join(path.read_text() for path in paths)


@pytest.mark.parametrize("reason", Lease.CloseReason.names)
def test_every_lease_close_reason_is_set_by_the_code(reason):
    assert reason in WRITTEN_BY, f"{reason}: say where it is set and which test shows it"
    assert re.search(rf"(?:CloseReason|Reason)\.{reason}\b", _code())


def test_a_provider_is_suspended_by_the_code():
    # lease_sla_settle: tests/integration/test_sla.py::test_a_provider_whose_reputation_reaches_zero
    assert re.search(r"Provider\.Status\.SUSPENDED\b", _code())

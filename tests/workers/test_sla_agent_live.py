"""The real agent measures its latency for CPX: against a live server, its heartbeats' probes are
echoed and recorded as RTT samples on the lease it runs, and the lease carries its SLA terms."""

from decimal import Decimal

import pytest

from auctions.models import LeaseSla
from auctions.services.sla import lease_sla_copy
from tests.workers.test_agent_live import matched_job, start_agent
from workers.agent.backends import SimulateBackend

pytestmark = pytest.mark.django_db(transaction=True)


class TestAgentProbes:
    def test_the_agents_heartbeats_leave_rtt_samples_on_its_running_lease(self, live_server, caplog):
        # 0.05 h at 60× ≈ 3 s of running: several 0.3 s heartbeats, each with its probe echoed.
        lease = matched_job(expected_hours=Decimal("0.05"), latency_sla_ms=500)
        lease_sla_copy(leases=[lease])
        caplog.set_level("INFO", logger="cpx.agent")

        _, thread = start_agent(
            live_server, lease.provider, SimulateBackend(speedup=60, tick_s=0.1), once=True
        )
        thread.join(60)

        row = LeaseSla.objects.get(lease=lease)
        assert not thread.is_alive()
        assert row.terms["latency_p95_ms"] == 500
        assert row.probes >= 1 and len(row.rtt_ms) == row.probes
        assert row.p50_ms is not None and row.p50_ms >= 0
        lines = [record.getMessage() for record in caplog.records if record.name == "cpx.agent"]
        assert f"lease {lease.pk} SLA: p95 RTT <= 500 ms" in "\n".join(lines)

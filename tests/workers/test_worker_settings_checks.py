"""A real Celery worker refuses to start with clearing settings the market cannot run (issue 12 item 8),
and starts with valid ones: `config/celery.py` runs the `cpx_market` system checks at worker_init."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


def worker(**environment) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CPX_HETEROGENEOUS")}
    env.update(environment, DJANGO_SETTINGS_MODULE="config.settings.base", CELERY_BROKER_URL="memory://")
    return subprocess.Popen(
        [CELERY, "-A", "config", "worker", "--pool=solo", "--loglevel=INFO", "--without-heartbeat"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class TestWorkerStart:
    def test_exits_with_the_checks_message_on_welfare_without_its_payment_rule(self):
        process = worker(CPX_HETEROGENEOUS_MECHANISM="welfare")
        try:
            output, _ = process.communicate(timeout=120)
        finally:
            process.kill()

        assert process.returncode != 0
        assert "CPX will not start" in output
        assert "auctions.E003" in output
        assert " ready." not in output

    def test_starts_with_the_pair_set_together(self):
        process = worker(CPX_HETEROGENEOUS_MECHANISM="welfare", CPX_HETEROGENEOUS_PAYMENT_RULE="vcg")
        lines = []
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if " ready." in line:
                    break
            assert any(" ready." in line for line in lines), "".join(lines)
            assert process.poll() is None
        finally:
            process.kill()
            process.wait()

"""`make screenshots`: screenshots of each main page from a live demo, at desktop and phone width.

1. A temporary SQLite database is migrated and seeded (`cpx_seed`: providers, funded consumers, jobs).
2. `cpx_serve` runs the whole market on a free port: web, in-process Celery worker and beat (rounds
   every 2 s here), simulated provider agents and consumer traffic.
3. Once rounds have cleared and leases have completed, Chromium (Debian's /usr/bin/chromium, driven
   by Playwright — never `playwright install`) logs in as each role and saves every main page at
   1280 px and 390 px wide into docs/screenshots/<page>-<desktop|phone>.png (viewport-sized, so
   the PNGs stay small).
4. The demo stops; the database is deleted.

Usage: .venv/bin/python docs/screenshots.py [--out docs/screenshots] [--rounds 12] [--keep-running]
"""

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
# cpx_seed's demo logins (password = the username twice): never use cpx_seed on a real deployment.
LOGINS = {"operator": "operator", "provider": "ana-rig", "consumer": "acme-ai"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Demo:
    """The seeded market served by cpx_serve in a subprocess, on a database of its own."""

    def __init__(self, workdir: Path, port: int):
        self.db = workdir / "cpx-screenshots.sqlite3"
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "cpx_serve.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 — closed in stop()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": f"sqlite:///{self.db}",
            "CELERY_BROKER_URL": "memory://",
            "CELERY_RESULT_BACKEND": "cache+memory://",
            "REDIS_URL": "",
            "CPX_ROUND_INTERVAL_S": "2",
            "CPX_PRICING_INTERVAL_S": "6",
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen | None = None

    def manage(self, *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True)

    def start(self) -> None:
        self.manage("migrate", "--noinput", "-v0")
        self.manage("cpx_seed", "--quiet", "--jobs", "30")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "cpx_serve", f"127.0.0.1:{self.port}", "--traffic-interval", "1.5"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def query(self, sql: str, *params):
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as connection:
            return connection.execute(sql, params).fetchone()

    def wait_until_moving(self, *, rounds: int, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"cpx_serve exited; see its log:\n{self.tail()}")
            try:
                cleared = self.query("SELECT COUNT(*) FROM auctions_round WHERE status = 'CLEARED'")[0]
                completed = self.query("SELECT COUNT(*) FROM auctions_lease WHERE status = 'COMPLETED'")[0]
                quotes = self.query("SELECT COUNT(*) FROM auctions_pricequote")[0]
            except sqlite3.OperationalError:
                cleared = completed = quotes = 0
            print(
                f"  market: {cleared} rounds cleared, {completed} leases completed, {quotes} quotes",
                flush=True,
            )
            if cleared >= rounds and completed >= 3 and quotes > 0:
                return
            time.sleep(2)
        raise SystemExit(f"the market did not move within {timeout_s:g} s; see its log:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # cpx_serve shuts down in order on Ctrl-C
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"{username}-{username}")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state("networkidle")


def shoot(demo: Demo, out: Path) -> list[Path]:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    base = demo.url
    job_done = demo.query(
        "SELECT j.id FROM market_jobrequest j JOIN market_user u ON u.id = j.consumer_id "
        "WHERE u.username = ? AND j.status = 'COMPLETED' ORDER BY j.id DESC LIMIT 1",
        LOGINS["consumer"],
    )
    busy_round = demo.query(
        "SELECT id FROM auctions_round WHERE status = 'CLEARED' AND jobs_matched > 0 ORDER BY id DESC LIMIT 1"
    )
    saved: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for size, (width, height) in SIZES.items():

                def save(page, name: str, size=size) -> None:
                    path = out / f"{name}-{size}.png"
                    for attempt in range(3):  # a busy machine sometimes fails a capture; the page is fine
                        try:
                            page.screenshot(path=str(path))
                            break
                        except PlaywrightError:
                            if attempt == 2:
                                raise
                            time.sleep(1)
                    saved.append(path)
                    print(f"  saved {path.relative_to(ROOT)}", flush=True)

                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                page.goto(f"{base}/")
                save(page, "landing")
                page.goto(f"{base}/market/")
                save(page, "market")
                page.goto(f"{base}/accounts/signup/")
                page.get_by_role("button", name="Sign up").click()
                save(page, "signup-errors")
                context.close()

                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                log_in(page, base, LOGINS["provider"])
                page.goto(f"{base}/provider/")
                save(page, "provider-console")
                page.goto(f"{base}/provider/resources/new/")
                page.locator("#id_model_name").fill("RTX 3080")
                page.locator("#id_device_count").fill("0")
                page.locator("#id_ask_per_device_hour").fill("0.05")
                page.locator("#id_price_floor").fill("0.10")
                page.get_by_role("button", name="List it").click()
                save(page, "provider-resource-errors")
                page.goto(f"{base}/provider/leases/")
                save(page, "provider-leases")
                page.goto(f"{base}/keys/")
                page.get_by_label("Key name").fill("rig agent")
                page.get_by_role("button", name="Create key").click()
                save(page, "api-keys")
                context.close()

                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                log_in(page, base, LOGINS["consumer"])
                page.goto(f"{base}/jobs/")
                save(page, "consumer-jobs")
                page.goto(f"{base}/jobs/new/")
                page.locator("#id_model_name").fill("llama-3.1-8b-instruct")
                page.locator("#id_params_billion").fill("8")
                page.locator("#id_workload_tokens").fill("200000")
                page.locator("#id_region").fill("eu-west")
                page.locator("#id_max_price_per_device_hour").fill("0.9")
                page.locator("#id_budget").fill("12")
                page.locator("#id_budget").blur()
                page.locator("#quote-body .badge").wait_for(timeout=15_000)
                if size == "phone":
                    page.locator("#quote-title").evaluate("element => element.scrollIntoView()")
                save(page, "consumer-submit-quote")
                if job_done is not None:
                    page.goto(f"{base}/jobs/{job_done[0]}/")
                    save(page, "consumer-job-detail")
                page.goto(f"{base}/balance/")
                save(page, "consumer-balance")
                context.close()

                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                log_in(page, base, LOGINS["operator"])
                page.goto(f"{base}/ops/market/")
                save(page, "ops-market")
                page.locator("#chart-prices").evaluate("element => element.scrollIntoView()")
                save(page, "ops-market-charts")
                page.goto(f"{base}/ops/rounds/")
                save(page, "ops-rounds")
                if busy_round is not None:
                    page.goto(f"{base}/ops/rounds/{busy_round[0]}/")
                    page.get_by_role("button", name="Replay this round").click()
                    page.locator("#replay-verdict").wait_for(timeout=15_000)
                    save(page, "ops-round-replayed")
                page.goto(f"{base}/ops/settlements/")
                save(page, "ops-settlements")
                context.close()
        finally:
            browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--rounds", type=int, default=12, help="cleared rounds to wait for (default 12)")
    parser.add_argument("--keep-running", action="store_true", help="leave the demo up after the shots")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="cpx-screenshots-"))
    demo = Demo(workdir, free_port())
    try:
        print(f"demo: seeding {demo.db} and serving {demo.url}", flush=True)
        demo.start()
        demo.wait_until_moving(rounds=args.rounds)
        saved = shoot(demo, args.out)
        print(f"{len(saved)} screenshots in {args.out}")
        if args.keep_running:
            print(f"demo still up at {demo.url} — Ctrl-C to stop")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

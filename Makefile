# CPX — the two commands of the README are `make demo` and `make test`; the rest serve them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo demo-headless worker beat test lint install install-production lock production production-stop node bench clean screenshots chaos forge

# Installs go through the locks: every package, direct or not, at its pinned version and hash.
$(VENV)/.installed: requirements-dev.lock requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

## make install-production: the runtime set only (requirements.lock: no test tools, no in-process
## EVM) and the one npm package the pages serve (htmx)
install-production:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	test -f node_modules/htmx.org/dist/htmx.min.js || npm ci --no-audit --no-fund --loglevel=error --omit=dev

## make lock: re-resolve requirements.lock / requirements-dev.lock (exact versions and hashes) after
## editing requirements.txt / requirements-dev.txt
lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile requirements.txt --generate-hashes --python-version 3.11 -o requirements.lock -q
	$(VENV)/bin/uv pip compile requirements-dev.txt --generate-hashes --python-version 3.11 -o requirements-dev.lock -q

## make demo: install, migrate, seed, then serve the market moving on http://$(HOST):$(PORT)/ —
## web app + in-process Celery worker and beat (rounds every CPX_ROUND_INTERVAL_S) + SIMULATED
## provider agents + SIMULATED consumer traffic, all in one process (Ctrl-C stops it cleanly)
demo: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py cpx_seed
	@echo "API: http://$(HOST):$(PORT)/api/v1/   docs: http://$(HOST):$(PORT)/api/docs/   admin: http://$(HOST):$(PORT)/admin/"
	$(PY) manage.py cpx_serve $(HOST):$(PORT)

## make demo-headless: the same market for ROUNDS rounds without a browser, then a summary
ROUNDS ?= 5
demo-headless: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py cpx_demo --rounds $(ROUNDS)

## make worker / make beat: a real Celery worker / the one scheduler (CELERY_BROKER_URL=redis://…)
worker: $(VENV)/.installed
	$(VENV)/bin/celery -A config worker --loglevel=INFO

beat: $(VENV)/.installed
	$(VENV)/bin/celery -A config beat --loglevel=INFO

## make production: the production topology on this machine (gunicorn, one Celery worker, the beat,
## under config.settings.production on the local PostgreSQL and Redis), started in the background
## until /readyz answers 200; scripts/production.sh, logs and pids in var/production/
production: install-production
	scripts/production.sh start

production-stop:
	scripts/production.sh stop

## make test: install and run the whole suite (embedded default unless DATABASE_URL etc. are set)
test: install
	$(PY) -m pytest -q

## make forge: the Solidity unit, fuzz and invariant tests (contracts/forge), offline, compiled by the
## npm solcjs through contracts/forge/solc.js (forge never downloads a compiler)
forge: install
	node_modules/@foundry-rs/forge-linux-amd64/bin/forge test --offline --use contracts/forge/solc.js

## make chaos: the fault suite against PostgreSQL (DATABASE_URL names a database it drops and
## recreates) and a redis-server of its own: worker, Redis and agents killed, cancels racing rounds
CHAOS_DURATION ?= 150
chaos: install
	$(PY) -m tests.chaos --duration $(CHAOS_DURATION)

## make lint: ruff and the import-linter contracts (the engine stays pure; services never import views)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

## make bench: every benchmark in bench/ (prints ratios measured in the same run; round.py and
## api_submit.py need the local PostgreSQL, settlement_gas.py measures anvil too with --anvil URL)
bench: install
	$(PY) bench/double_auction.py
	$(PY) bench/welfare.py
	$(PY) bench/stackelberg.py
	$(PY) bench/brokers.py
	$(PY) bench/elastic.py
	$(PY) bench/tiers.py
	$(PY) bench/settlement_gas.py
	$(PY) bench/round_commit_gas.py
	$(PY) bench/round.py
	$(PY) bench/dashboard.py
	$(PY) bench/market_day.py --seeds 3
	$(PY) bench/api_submit.py
	$(PY) bench/backup_pool.py

## make screenshots: a live demo (cpx_serve, temp SQLite, free port) photographed by Chromium: each main
## page at 1280 and 390 px into docs/screenshots/ (needs /usr/bin/chromium: apt-get install -y chromium)
screenshots: install
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) node_modules db.sqlite3 staticfiles build/forge

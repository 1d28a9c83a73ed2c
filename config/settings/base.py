"""CPX settings: everything is declared here and read from the environment (`.env.example` lists
every variable). With no variable set this is the embedded default: SQLite, Celery on an in-memory
broker, an in-process EVM. `config.settings.production` tightens it for a real deployment."""

from decimal import Decimal
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; a missing file is fine

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The embedded default has a fixed development key; production.py refuses to start without one.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="cpx-insecure-development-key-change-me")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "market",
    "auctions",
    "contracts",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Embedded default: a SQLite file beside the project. DATABASE_URL=postgres://… switches.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for the writer instead of failing at once when the in-process worker writes too.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "market.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

# Cache backs the API rate limits; REDIS_URL shares them across processes.
REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "cpx"}
    )
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "market.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],  # STRICT_JSON: NaN and Infinity refused
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["market.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("CPX_API_RATE", default="6000/min")},
    "EXCEPTION_HANDLER": "config.exception_handler.render_error",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "CPX — computing-power exchange API",
    "DESCRIPTION": "List edge compute, submit LLM jobs, read prices, rounds and settlements. "
    'Every anticipated error has the body {"code", "message", "extra"}.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "market.models.JobRequest.Kind",
        "TransferKindEnum": "market.models.LedgerTransfer.Kind",
        "DeviceClassEnum": "market.models.providers.DeviceClass",
    },
}

# --- Celery: memory broker + in-process worker by default; CELERY_BROKER_URL=redis://… for real workers.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="cache+memory://")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Money and the market.
# One quantum for every amount: 6 decimal places, the base unit of a 6-decimal stablecoin.
CPX_MONEY_DECIMAL_PLACES = 6
CPX_PLATFORM_FEE_RATE = Decimal(env.str("CPX_PLATFORM_FEE_RATE", default="0.05"))
CPX_MAX_JOB_BUDGET = Decimal(env.str("CPX_MAX_JOB_BUDGET", default="1000000"))
# Tests run with CPX_REQUIRE_SERVICES=1 in CI so a service-backed test cannot silently skip.
CPX_REQUIRE_SERVICES = env.bool("CPX_REQUIRE_SERVICES", default=False)

# --- Chain (issue 5): empty CHAIN_RPC_URL means the in-process EVM.
CHAIN_RPC_URL = env.str("CHAIN_RPC_URL", default="")
CHAIN_SIGNER_KEY = env.str("CHAIN_SIGNER_KEY", default="")
CHAIN_CONTRACT_ADDRESS = env.str("CHAIN_CONTRACT_ADDRESS", default="")

# --- Settlement on chain (issue 5): batches of completed leases committed as Merkle roots
# Off: the ledger alone settles (no batches, no chain calls from tasks).
CPX_SETTLEMENT_ON_CHAIN = env.bool("CPX_SETTLEMENT_ON_CHAIN", default=True)
# Ledger unit (6 dp) -> on-chain integer: 10**12 wei per unit on native currency (the demo: 1 unit =
# 1e-6 ETH, so the 1e-6 quantum is 1e6 wei); 10**6 for a 6-decimal stablecoin. A multiple of 10**6.
CHAIN_WEI_PER_UNIT = env.int("CHAIN_WEI_PER_UNIT", default=10**12)
# Where fee leaves pay the platform's share; empty: the signer's (operator's) address.
CHAIN_FEE_ADDRESS = env.str("CHAIN_FEE_ADDRESS", default="")
# Blocks a deposit must be buried under before it is credited (0 on a dev chain).
CHAIN_CONFIRMATIONS = env.int("CHAIN_CONFIRMATIONS", default=0)
CHAIN_LOG_RANGE = env.int("CHAIN_LOG_RANGE", default=5000)  # blocks per eth_getLogs call
CPX_SETTLEMENT_BATCH_SIZE = env.int("CPX_SETTLEMENT_BATCH_SIZE", default=500)  # leases per batch
CPX_SETTLEMENT_INTERVAL_S = env.float("CPX_SETTLEMENT_INTERVAL_S", default=15.0)
CPX_RECONCILE_INTERVAL_S = env.float("CPX_RECONCILE_INTERVAL_S", default=30.0)
CPX_DEPOSIT_SYNC_INTERVAL_S = env.float("CPX_DEPOSIT_SYNC_INTERVAL_S", default=10.0)
# A SUBMITTED batch older than this lost its worker: it is looked up on chain, then sent again if absent.
# Longer than the client's receipt timeout (30 s).
CPX_SETTLEMENT_SUBMIT_STALE_S = env.int("CPX_SETTLEMENT_SUBMIT_STALE_S", default=120)
# --- end Settlement on chain (issue 5)

# --- Leases and agents (issue 4)
# A running lease whose agent has not reported (heartbeat or progress) for this long fails over;
# a provider silent for this long is out of the book until it heartbeats again.
CPX_HEARTBEAT_TIMEOUT_S = env.int("CPX_HEARTBEAT_TIMEOUT_S", default=60)
# A dispatched lease not accepted within this long is re-offered (the provider is penalised).
CPX_OFFER_TIMEOUT_S = env.int("CPX_OFFER_TIMEOUT_S", default=120)
# SLA penalty: this share of the lease's expected cost, taken from the provider's earnings.
CPX_SLA_PENALTY_RATE = Decimal(env.str("CPX_SLA_PENALTY_RATE", default="0.10"))
# Reputation lost per SLA fault; up to twice this when the earnings could not cover the penalty.
CPX_SLA_REPUTATION_STEP = Decimal(env.str("CPX_SLA_REPUTATION_STEP", default="0.05"))
# Longest an agent's GET /api/v1/agent/leases?wait=S is held open.
CPX_AGENT_LONG_POLL_S = env.int("CPX_AGENT_LONG_POLL_S", default=20)
# The simulate backend runs a lease for expected_device_hours × 3600 / this many seconds.
CPX_SIMULATION_SPEEDUP = env.float("CPX_SIMULATION_SPEEDUP", default=600.0)

# --- Clearing (issue 4)
# Seconds between rounds (the beat schedule reads it; the demo default clears every few seconds).
CPX_ROUND_INTERVAL_S = env.float("CPX_ROUND_INTERVAL_S", default=5.0)
# Unit double auction per resource class (single-device jobs). Budget-balanced rules only — the
# platform never runs a deficit: mcafee, trade_reduction, sbba, sbba_buyer_lottery (not vcg, huang).
CPX_UNIT_MECHANISM = env.str("CPX_UNIT_MECHANISM", default="mcafee")
# How single-device jobs clear (issue 14): "depth" (default) runs CPX_UNIT_MECHANISM only in classes
# with at least CPX_THICK_BOOK_MIN_ORDERS bids and as many free devices, and one posted-price book
# over every other class (prices fixed from earlier rounds; a job may take any class that fits it);
# "per_class" is the earlier rule (CPX_UNIT_MECHANISM in every class, a lone bid to the heterogeneous
# book).
CPX_CLEARING_RULE = env.str("CPX_CLEARING_RULE", default="depth")
CPX_THICK_BOOK_MIN_ORDERS = env.int("CPX_THICK_BOOK_MIN_ORDERS", default=10)
# Heterogeneous book (multi-device jobs, SLAs the classes cannot express, failed-over jobs):
# "greedy" with "critical" payments (a provider receives its cost), or "welfare" with "vcg" where a
# lease's receipt is capped at the job's payment so that no lease runs a deficit.
CPX_HETEROGENEOUS_MECHANISM = env.str("CPX_HETEROGENEOUS_MECHANISM", default="greedy")
CPX_HETEROGENEOUS_PAYMENT_RULE = env.str("CPX_HETEROGENEOUS_PAYMENT_RULE", default="critical")
# Time limit of each MILP solve of the welfare mechanism, seconds.
CPX_WELFARE_TIME_LIMIT_S = env.float("CPX_WELFARE_TIME_LIMIT_S", default=10.0)
# Seed of the lottery of the sbba rules (stored in the snapshot, so a replay draws the same).
CPX_ROUND_SEED = env.int("CPX_ROUND_SEED", default=0)
# Providers that never heartbeat are out of the book unless this is on (a demo without agents).
CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS = env.bool("CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS", default=False)
# Pricing: the horizon over which free capacity is counted (device-hours), and the recent rounds
# whose bids join the queued ones as demand.
CPX_PRICING_HORIZON_H = env.float("CPX_PRICING_HORIZON_H", default=1.0)
CPX_PRICING_RECENT_ROUNDS = env.int("CPX_PRICING_RECENT_ROUNDS", default=20)
# --- end Clearing (issue 4)

# --- Tasks and schedule (issue 4)
# The round interval is CPX_ROUND_INTERVAL_S (Clearing, above); sweeps and pricing have their own.
CPX_SWEEP_INTERVAL_S = env.float("CPX_SWEEP_INTERVAL_S", default=5.0)
CPX_PRICING_INTERVAL_S = env.float("CPX_PRICING_INTERVAL_S", default=30.0)
# One beat (`celery -A config beat`, or the embedded one) sends these; any worker runs them. Each
# message expires after one interval: a backlog built while no worker ran is dropped, not replayed.


def _every(task: str, seconds: int) -> dict:
    """A beat entry that expires after one interval: a backlog from downtime is dropped, not replayed."""
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


CELERY_BEAT_SCHEDULE = {
    "clear-round": _every("auctions.open_and_clear_round", CPX_ROUND_INTERVAL_S),
    "sweep-leases": _every("auctions.sweep_leases", CPX_SWEEP_INTERVAL_S),
    "update-prices": _every("auctions.update_prices", CPX_PRICING_INTERVAL_S),
    # --- Settlement on chain (issue 5)
    "settlement-batches": _every("contracts.create_batch", CPX_SETTLEMENT_INTERVAL_S),
    "settlement-deposits": _every("contracts.sync_deposits", CPX_DEPOSIT_SYNC_INTERVAL_S),
    "settlement-reconcile": _every("contracts.reconcile", CPX_RECONCILE_INTERVAL_S),
    # --- end Settlement on chain (issue 5)
}
# The schedule is all intervals of seconds: nothing worth a schedule file on disk.
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"
# One queue for every task; a name of its own per deployment when several share one Redis.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="cpx")
# acks_late is set per task (workers/tasks.py: every task there is idempotent). A prefork child that
# dies has its message acknowledged, not requeued: a task that kills its worker must not loop; the
# next beat tick picks the OPEN round up instead.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Redis redelivers a message a dead worker never acknowledged after this many seconds; it must exceed
# the longest hard time limit (150 s), or a task still running would be delivered twice.
CPX_BROKER_VISIBILITY_TIMEOUT_S = env.int("CPX_BROKER_VISIBILITY_TIMEOUT_S", default=300)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"polling_interval": 0.1}  # the in-process broker: a task starts within 0.1 s, not 1 s
    if CELERY_BROKER_URL.startswith("memory://")
    else {
        "visibility_timeout": CPX_BROKER_VISIBILITY_TIMEOUT_S,
        "unacked_restore_interval": max(1, min(10, CPX_BROKER_VISIBILITY_TIMEOUT_S // 2)),
        "unacked_restore_throttle": 1,
    }
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default writes from several threads (web requests, the worker, the agents'
    # calls). A deferred BEGIN that later needs the write lock fails at once with "database is
    # locked" (SQLite cannot wait without risking deadlock); BEGIN IMMEDIATE takes the lock up
    # front and waits for it (OPTIONS timeout) instead.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
# --- end Tasks and schedule (issue 4)

# --- Pages (issue 6): server-rendered pages, htmx from npm, security headers
LOGIN_URL = "pages:login"
LOGIN_REDIRECT_URL = "pages:home"
LOGOUT_REDIRECT_URL = "pages:login"
# htmx is the npm package htmx.org (package.json, exact pin), served from node_modules as a static
# file under vendor/htmx/; no CDN at run time.
CPX_HTMX_DIST = BASE_DIR / "node_modules" / "htmx.org" / "dist"
if not (CPX_HTMX_DIST / "htmx.min.js").is_file():
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"{CPX_HTMX_DIST / 'htmx.min.js'} is missing: the pages need the npm packages. "
        "Run `npm ci` (or `make install`) in the project directory."
    )
STATICFILES_DIRS = [*STATICFILES_DIRS, ("vendor/htmx", CPX_HTMX_DIST)]
MIDDLEWARE = [*MIDDLEWARE, "config.csp.ContentSecurityPolicyMiddleware"]
# The Swagger UI of /api/docs/ loads its assets from a CDN: no CSP there (the API answers JSON).
CPX_CSP_EXEMPT_PREFIXES = ["/api/docs/"]
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_HTTPONLY = True
# A consumer whose available balance falls below this sees a warning on its pages.
CPX_LOW_BALANCE = Decimal("10")
# --- end Pages (issue 6)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("CPX_LOG_LEVEL", default="INFO")},
}

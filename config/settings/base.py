"""CPX settings: everything is declared here and read from the environment (`.env.example` lists
every variable). With no variable set this is the embedded default: SQLite, Celery on an in-memory
broker, an in-process EVM. `config.settings.production` tightens it for a real deployment."""

import warnings
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
    # whitenoise serves static files under runserver too, as it does under gunicorn (DEBUG or not)
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from here (no CDN)
    "django_celery_results",  # task results in the database, for the operator (production)
    "market",
    "auctions",
    "contracts",
    "workers",
]

MIDDLEWARE = [
    # First: every later line of the request, and its answer, carry the request id; the latency
    # observed covers the whole stack.
    "ops.logs.RequestIdMiddleware",
    "ops.metrics.LatencyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # /api/v1/?name= with an empty value is a 400, not "no filter" (issue 13)
    "config.query_params.EmptyQueryParameterMiddleware",
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
                "market.views.common.market_units",
            ],
        },
    },
]

# Embedded default: a SQLite file beside the project. DATABASE_URL=postgres://… switches.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)


def postgresql_pool(database: dict) -> dict:
    """PostgreSQL through psycopg 3 with Django's connection pool (psycopg_pool): a request or task
    borrows a connection and gives it back, instead of each thread holding one for CONN_MAX_AGE.
    DATABASE_POOL=false falls back to persistent connections."""
    if database["ENGINE"] != "django.db.backends.postgresql" or not env.bool("DATABASE_POOL", default=True):
        return database
    options = database.setdefault("OPTIONS", {})
    options["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=8),
        "timeout": env.float("DATABASE_POOL_TIMEOUT_S", default=10.0),
    }
    database["CONN_MAX_AGE"] = 0  # the pool keeps the connections; Django refuses both at once
    return database


DATABASES["default"] = postgresql_pool(DATABASES["default"])
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
# whitenoise serves /static/ in every mode. Here straight from the apps' and STATICFILES_DIRS'
# files (no collectstatic needed, so `runserver` without DEBUG has its CSS); production.py serves
# the collected, hashed and compressed copy instead.
WHITENOISE_USE_FINDERS = True
# ... so an empty STATIC_ROOT (no collectstatic yet) is expected here, not worth a warning per process.
warnings.filterwarnings("ignore", message="No directory at")

# --- Files (issue 10): batch inputs, results, datasets and artifacts through Django's storage API.
# Local files under CPX_DATA_DIR by default; S3-compatible object storage (AWS S3, MinIO, R2, …)
# through django-storages when CPX_FILES_S3_BUCKET is set (boto3 from requirements-s3.txt).
CPX_DATA_DIR = Path(env.str("CPX_DATA_DIR", default=str(BASE_DIR / "data")))
MEDIA_ROOT = CPX_DATA_DIR / "files"
MEDIA_URL = "/media/"  # never served: files leave only through the owner's or a lease's endpoint
CPX_FILES_S3_BUCKET = env.str("CPX_FILES_S3_BUCKET", default="")
STORAGES = {
    "default": (
        {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": CPX_FILES_S3_BUCKET,
                "endpoint_url": env.str("CPX_FILES_S3_ENDPOINT_URL", default="") or None,
                "region_name": env.str("CPX_FILES_S3_REGION", default="") or None,
                "access_key": env.str("CPX_FILES_S3_ACCESS_KEY", default="") or None,
                "secret_key": env.str("CPX_FILES_S3_SECRET_KEY", default="") or None,
                "default_acl": "private",
                "querystring_auth": True,
                "file_overwrite": False,
            },
        }
        if CPX_FILES_S3_BUCKET
        else {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": MEDIA_ROOT}}
    ),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Upload limits: bytes of one upload (batch input or dataset), requests in one batch file, and the
# max_tokens a request gets when it states none (the agent sends it, so the bound is checked).
CPX_FILE_MAX_BYTES = env.int("CPX_FILE_MAX_BYTES", default=100 * 1024 * 1024)
CPX_BATCH_MAX_LINES = env.int("CPX_BATCH_MAX_LINES", default=50_000)
CPX_BATCH_DEFAULT_MAX_TOKENS = env.int("CPX_BATCH_DEFAULT_MAX_TOKENS", default=256)
# A file's bytes are deleted this many days after upload (results: after they are written).
CPX_FILE_TTL_DAYS = env.int("CPX_FILE_TTL_DAYS", default=30)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024  # form fields; uploaded files stream to temp files
# Spot checks of batch leases (auctions.services.verification): the share of completed batch leases
# checked, requests re-run per check, the verifier's fee per request (from the platform's fees), and
# what a failed check costs the provider (reputation points, share of its stake).
CPX_VERIFY_FRACTION = env.float("CPX_VERIFY_FRACTION", default=0.1)
CPX_VERIFY_SAMPLE = env.int("CPX_VERIFY_SAMPLE", default=3)
CPX_VERIFICATION_FEE = Decimal(env.str("CPX_VERIFICATION_FEE", default="0.0001"))
CPX_VERIFY_REPUTATION_STEP = Decimal(env.str("CPX_VERIFY_REPUTATION_STEP", default="0.25"))
CPX_VERIFY_STAKE_SLASH_RATE = Decimal(env.str("CPX_VERIFY_STAKE_SLASH_RATE", default="0.5"))

# Cache backs the API rate limits; REDIS_URL shares them across processes.
REDIS_URL = env.str("REDIS_URL", default="")
# Bounded socket timeouts: a Redis that hangs costs a request at most seconds, then the rate limiter
# counts in-process for a while (market.api.throttling.CounterCaches).
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "cpx"}
    )
}

# A JSON body nesting deeper than this is refused (400 json_too_deep) before it is decoded: the
# decoder recurses once per level, and no request of the API needs more than a few.
CPX_JSON_MAX_DEPTH = env.int("CPX_JSON_MAX_DEPTH", default=32)

# Most rows one page of a list returns (`?limit=` above it is cut to it; `next` links to the rest).
CPX_API_MAX_LIMIT = env.int("CPX_API_MAX_LIMIT", default=500)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "market.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSONParser (STRICT_JSON: NaN and Infinity refused) behind a nesting-depth bound.
    "DEFAULT_PARSER_CLASSES": ["config.parsers.DepthLimitedJSONParser"],
    # limit/offset checked (400 `invalid` on anything but an integer in range), limit capped.
    "DEFAULT_PAGINATION_CLASS": "config.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["market.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("CPX_API_RATE", default="6000/min")},
    "EXCEPTION_HANDLER": "config.exception_handler.render_error",
    "DEFAULT_SCHEMA_CLASS": "config.openapi.CpxAutoSchema",
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
    # Swagger UI and Redoc from the drf-spectacular-sidecar package, served by this project.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "market.models.JobRequest.Kind",
        "JobStatusEnum": "market.models.JobRequest.Status",
        "TransferKindEnum": "market.models.LedgerTransfer.Kind",
        "DeviceClassEnum": "market.models.providers.DeviceClass",
        "RoundStatusEnum": "auctions.models.Round.Status",
        "LeaseStatusEnum": "auctions.models.Lease.Status",
        "SettlementBatchStatusEnum": "contracts.models.SettlementBatch.Status",
    },
}

# --- Celery: memory broker + in-process worker by default; CELERY_BROKER_URL=redis://… for real workers.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
# Results: the embedded default keeps them in memory; production.py stores them in the database
# (django-celery-results: the admin's "Task results", or SQL on django_celery_results_taskresult).
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="cache+memory://")
CELERY_RESULT_EXTENDED = True  # the task's name, arguments and worker are stored with its result
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES_S", default=7 * 24 * 3600)
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
# The name of the ledger's unit of money, shown beside every amount and price (pages and API).
CPX_CURRENCY = env.str("CPX_CURRENCY", default="USDC")
# A job's deadline is at most this many days ahead (its escrow and a live lease last that long).
CPX_MAX_JOB_DEADLINE_DAYS = env.int("CPX_MAX_JOB_DEADLINE_DAYS", default=30)
# Tests run with CPX_REQUIRE_SERVICES=1 in CI so a service-backed test cannot silently skip.
CPX_REQUIRE_SERVICES = env.bool("CPX_REQUIRE_SERVICES", default=False)

# --- Chain (issue 5): empty CHAIN_RPC_URL means the in-process EVM.
CHAIN_RPC_URL = env.str("CHAIN_RPC_URL", default="")
CHAIN_SIGNER_KEY = env.str("CHAIN_SIGNER_KEY", default="")
CHAIN_CONTRACT_ADDRESS = env.str("CHAIN_CONTRACT_ADDRESS", default="")
# Which contract CHAIN_CONTRACT_ADDRESS is (and the in-process EVM deploys): "v2" (SettlementV2:
# consumer-signed orders, cumulative claims, admin split from the operator) or "v1" (the previous one).
CHAIN_CONTRACT_VERSION = env.str("CHAIN_CONTRACT_VERSION", default="v2")

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
# Confirmed blocks each deposit sync re-reads, and whose credited deposits it re-checks for a reorg.
CHAIN_REORG_DEPTH = env.int("CHAIN_REORG_DEPTH", default=64)
CHAIN_LOG_RANGE = env.int("CHAIN_LOG_RANGE", default=5000)  # blocks per eth_getLogs call
# Gas-share guard: a batch whose commit would cost more than this share of the value it settles waits
# to grow (0: off, the embedded default; e.g. 0.02 in production).
CPX_SETTLEMENT_MAX_GAS_SHARE = env.float("CPX_SETTLEMENT_MAX_GAS_SHARE", default=0.0)
# How long a consumer's EIP-712 settlement order stays valid (its deadline), from when it is drafted.
CPX_ORDER_TTL_S = env.int("CPX_ORDER_TTL_S", default=30 * 86400)
# An order expiring sooner than this is not used for a new batch (the commit might land after it).
CPX_ORDER_MIN_LIFE_S = env.int("CPX_ORDER_MIN_LIFE_S", default=600)
CPX_SETTLEMENT_BATCH_SIZE = env.int("CPX_SETTLEMENT_BATCH_SIZE", default=500)  # leases per batch
CPX_SETTLEMENT_INTERVAL_S = env.float("CPX_SETTLEMENT_INTERVAL_S", default=15.0)
CPX_RECONCILE_INTERVAL_S = env.float("CPX_RECONCILE_INTERVAL_S", default=30.0)
# The platform claims its fee leaves this often (well inside the contract's claim window).
CPX_FEE_CLAIM_INTERVAL_S = env.float("CPX_FEE_CLAIM_INTERVAL_S", default=3600.0)
CPX_DEPOSIT_SYNC_INTERVAL_S = env.float("CPX_DEPOSIT_SYNC_INTERVAL_S", default=10.0)
# A SUBMITTED batch older than this lost its worker: it is looked up on chain, then sent again if absent.
# Longer than the client's receipt timeout (30 s).
CPX_SETTLEMENT_SUBMIT_STALE_S = env.int("CPX_SETTLEMENT_SUBMIT_STALE_S", default=120)
# The match on chain (issue 12): cleared rounds' hashes committed per transaction, and how often.
CPX_ROUND_COMMIT_BATCH = env.int("CPX_ROUND_COMMIT_BATCH", default=20)
CPX_ROUND_COMMIT_INTERVAL_S = env.float("CPX_ROUND_COMMIT_INTERVAL_S", default=10.0)
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
# Reputation in clearing (docs/sla.md): effective ask = ask × (1 + weight × (1 − reputation)); 0 = off.
CPX_SLA_QUALITY_WEIGHT = env.float("CPX_SLA_QUALITY_WEIGHT", default=0.5)
# The oldest latency-probe echo counted as an RTT sample, in seconds.
CPX_SLA_PROBE_MAX_AGE_S = env.float("CPX_SLA_PROBE_MAX_AGE_S", default=30.0)
# Longest an agent's GET /api/v1/agent/leases?wait=S is held open.
CPX_AGENT_LONG_POLL_S = env.int("CPX_AGENT_LONG_POLL_S", default=20)
# Long-polls one process holds open at once, per API key and in all; beyond: 429 with Retry-After at
# once. Keep the total below a web worker's threads (gunicorn --threads) so the rest of the API always
# has a thread.
CPX_AGENT_LONG_POLLS_PER_KEY = env.int("CPX_AGENT_LONG_POLLS_PER_KEY", default=1)
CPX_AGENT_LONG_POLLS_TOTAL = env.int("CPX_AGENT_LONG_POLLS_TOTAL", default=2)
# The async offer channel (GET /api/v1/agent/offers?wait=S under ASGI): longest wait, waits one API
# key may hold open per process (a wait holds no thread, only a socket), and the Redis pub/sub channel.
CPX_AGENT_OFFER_WAIT_S = env.int("CPX_AGENT_OFFER_WAIT_S", default=60)
CPX_AGENT_OFFER_WAITS_PER_KEY = env.int("CPX_AGENT_OFFER_WAITS_PER_KEY", default=4)
CPX_AGENT_OFFER_CHANNEL = env.str("CPX_AGENT_OFFER_CHANNEL", default="cpx:agent-offers")
# The simulate backend runs a lease for expected_device_hours × 3600 / this many seconds; a lease
# accepted as a simulation may report this many times its wall time (set 1 to hold it to real time).
CPX_SIMULATION_SPEEDUP = env.float("CPX_SIMULATION_SPEEDUP", default=600.0)
# Metered usage is at most devices × (seconds since acceptance + this tolerance): clocks and the
# agent's start lag the server's accept by a little; nothing runs faster than wall time.
CPX_METERING_TOLERANCE_S = env.float("CPX_METERING_TOLERANCE_S", default=5.0)

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
# Cloud–edge tiers (AI-Bazaar, docs/ai-bazaar.md): "aware" clears latency-bound jobs edge first with
# the cloud as the overflow at its Stackelberg price level; "off" ignores the provider tier.
CPX_TIER_CLEARING = env.str("CPX_TIER_CLEARING", default="aware")
CPX_TIER_SUBSTITUTION = env.float("CPX_TIER_SUBSTITUTION", default=0.5)
# Heterogeneous book (multi-device jobs, SLAs the classes cannot express, failed-over jobs):
# "greedy" with "critical" payments (a provider receives its cost), or "welfare" with "vcg" where a
# lease's receipt is capped at the job's payment so that no lease runs a deficit.
CPX_HETEROGENEOUS_MECHANISM = env.str("CPX_HETEROGENEOUS_MECHANISM", default="greedy")
CPX_HETEROGENEOUS_PAYMENT_RULE = env.str("CPX_HETEROGENEOUS_PAYMENT_RULE", default="critical")
# Time limit of each MILP solve of the welfare mechanism, seconds.
CPX_WELFARE_TIME_LIMIT_S = env.float("CPX_WELFARE_TIME_LIMIT_S", default=10.0)
# Seed of the lottery of the sbba rules (stored in the snapshot, so a replay draws the same).
CPX_ROUND_SEED = env.int("CPX_ROUND_SEED", default=0)
# Workers that clear one round's books (issue 13): 1 clears them in the round's task; N > 1 sends
# N - 1 shards to other workers (Redis broker and result backend) and commits in one transaction;
# a shard missing after CPX_ROUND_SHARD_TIMEOUT_S seconds leaves the round whole for the next run.
CPX_ROUND_SHARDS = env.int("CPX_ROUND_SHARDS", default=1)
CPX_ROUND_SHARD_TIMEOUT_S = env.float("CPX_ROUND_SHARD_TIMEOUT_S", default=60.0)
# Providers that never heartbeat are out of the book unless this is on (a demo without agents).
CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS = env.bool("CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS", default=False)
# Pricing: the horizon over which free capacity is counted (device-hours), and the recent rounds
# whose bids join the queued ones as demand.
CPX_PRICING_HORIZON_H = env.float("CPX_PRICING_HORIZON_H", default=1.0)
CPX_PRICING_RECENT_ROUNDS = env.int("CPX_PRICING_RECENT_ROUNDS", default=20)
# Backup pool (issue 12, FusionAI; auctions.services.backup_pool): each round holds up to this share
# of its idle devices in standby for running jobs (0 = no pool); which jobs get one: "opt_in" (jobs
# submitted with standby=true), "all", or "off"; the fee, a share of the lease's expected cost,
# escrowed from the consumer and paid to the standby's provider.
CPX_BACKUP_POOL_POLICY = env.str("CPX_BACKUP_POOL_POLICY", default="opt_in")
CPX_BACKUP_POOL_SHARE = env.float("CPX_BACKUP_POOL_SHARE", default=0.5)
CPX_STANDBY_FEE_RATE = Decimal(env.str("CPX_STANDBY_FEE_RATE", default="0.05"))
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
    "settlement-fee-claims": _every("contracts.claim_fees", CPX_FEE_CLAIM_INTERVAL_S),
    "round-commitments": _every("contracts.commit_rounds", CPX_ROUND_COMMIT_INTERVAL_S),
    "round-commitments-reconcile": _every("contracts.reconcile_rounds", CPX_RECONCILE_INTERVAL_S),
    # --- end Settlement on chain (issue 5)
    "expire-files": _every("market.expire_files", 3600),  # issue 10: CPX_FILE_TTL_DAYS
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
# Celery's consumer, closing a lost broker connection before collecting it: in Celery's order a Redis
# restart with an unacknowledged task killed the worker (workers/consumer.py says how).
CELERY_WORKER_CONSUMER = "workers.consumer:Consumer"
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
# The Swagger UI of /api/docs/ (assets from drf-spectacular-sidecar, served here) starts itself with
# an inline script: no CSP there (the API answers JSON).
CPX_CSP_EXEMPT_PREFIXES = ["/api/docs/"]
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_HTTPONLY = True
# A consumer whose available balance falls below this sees a warning on its pages.
CPX_LOW_BALANCE = Decimal("10")
# --- end Pages (issue 6)

# --- Operations (issue 13): probes, metrics, logs
# /readyz reports the market down when no round has cleared for this long (beat or workers stuck).
CPX_READY_ROUND_MAX_AGE_S = env.int("CPX_READY_ROUND_MAX_AGE_S", default=120)
# /metrics demands `Authorization: Bearer <this>` when set; open (internal network) when empty.
CPX_METRICS_TOKEN = env.str("CPX_METRICS_TOKEN", default="")
# One log line per HTTP request (method, path, status, duration_ms); production turns it on.
CPX_ACCESS_LOG = env.bool("CPX_ACCESS_LOG", default=False)
# plain (human) or json (one object per line with request_id and task_id); production: json.
CPX_LOG_FORMAT = env.str("CPX_LOG_FORMAT", default="plain")


def logging_config(*, fmt: str, level: str) -> dict:
    """The LOGGING dict: every record goes to stderr with its request id and Celery task id."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "ops.logs.ContextFilter"}},
        "formatters": {
            "plain": {
                "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(task_id)s] %(message)s"
            },
            "json": {"()": "ops.logs.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt, "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level},
    }


LOGGING = logging_config(fmt=CPX_LOG_FORMAT, level=env.str("CPX_LOG_LEVEL", default="INFO"))
# Celery keeps the handlers above (JSON with task ids) instead of installing its own on the root.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# --- end Operations (issue 13)

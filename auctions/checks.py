"""Start-up checks of every clearing and pricing setting (Django system checks, tag `cpx_market`).

A setting the market cannot run with must stop the process at start-up with a clear message, not make
every round refuse, every few seconds, forever (issue 12: `CPX_HETEROGENEOUS_MECHANISM=welfare`
without its payment rule did exactly that). Django runs these checks for `manage.py check`, runserver,
migrate and every management command; `config/celery.py` runs them when a Celery worker starts
(`refuse_to_start`), where Django does not. Each error has a stable id (`auctions.E0NN`) and a hint that
names the setting to change.

The accepted values live where they are used (`auctions.services.rounds`: the budget-balanced unit
rules and the heterogeneous mechanism/payment-rule pairs), so a check and a round cannot disagree. Last,
the engine itself clears a tiny book with the configured rules, so a rule the engine refuses is caught
here too.
"""

import math
from decimal import Decimal, InvalidOperation

from django.core import checks

from auctions.checks_sla import sla_errors

TAG = "cpx_market"


def _error(id: int, message: str, hint: str) -> checks.Error:
    return checks.Error(message, hint=hint, id=f"auctions.E{id:03d}")


def _positive_number(value) -> bool:
    return (
        isinstance(value, int | float | Decimal)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@checks.register(TAG)
def check_clearing_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every clearing and pricing setting, alone and in combination."""
    from django.conf import settings

    from auctions.services.rounds import CLEARING_RULES, HETEROGENEOUS_RULES, UNIT_MECHANISMS

    errors = []
    unit = settings.CPX_UNIT_MECHANISM
    if unit not in UNIT_MECHANISMS:
        errors.append(
            _error(
                1,
                f"CPX_UNIT_MECHANISM={unit!r} is not a budget-balanced unit double auction.",
                f"Use one of {', '.join(sorted(UNIT_MECHANISMS))} (vcg runs a deficit; huang is for "
                "divisible quantities).",
            )
        )
    hetero = settings.CPX_HETEROGENEOUS_MECHANISM
    rule = settings.CPX_HETEROGENEOUS_PAYMENT_RULE
    pairs = ", ".join(f"{m}/{r}" for m, r in sorted(HETEROGENEOUS_RULES.items()))
    if hetero not in HETEROGENEOUS_RULES:
        errors.append(
            _error(
                2,
                f"CPX_HETEROGENEOUS_MECHANISM={hetero!r} is not a heterogeneous mechanism.",
                f"Use greedy or welfare, with its payment rule ({pairs}).",
            )
        )
    elif HETEROGENEOUS_RULES[hetero] != rule:
        errors.append(
            _error(
                3,
                f"CPX_HETEROGENEOUS_MECHANISM={hetero} needs CPX_HETEROGENEOUS_PAYMENT_RULE="
                f"{HETEROGENEOUS_RULES[hetero]}, not {rule!r}: every round would refuse to clear.",
                f"Set the pair together: {pairs} (mechanism/payment rule).",
            )
        )
    limit = settings.CPX_WELFARE_TIME_LIMIT_S
    if not _positive_number(limit):
        errors.append(
            _error(
                4,
                f"CPX_WELFARE_TIME_LIMIT_S={limit!r} must be a finite number of seconds > 0.",
                "It is the heterogeneous solver's wall-clock guard; the default is 10.",
            )
        )
    elif limit >= settings.CELERY_TASK_SOFT_TIME_LIMIT:
        errors.append(
            _error(
                5,
                f"CPX_WELFARE_TIME_LIMIT_S={limit:g} is not below CELERY_TASK_SOFT_TIME_LIMIT="
                f"{settings.CELERY_TASK_SOFT_TIME_LIMIT}: the round task would be killed before the "
                "solver stops, every round.",
                "Lower CPX_WELFARE_TIME_LIMIT_S or raise CELERY_TASK_SOFT_TIME_LIMIT.",
            )
        )
    seed = settings.CPX_ROUND_SEED
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        errors.append(
            _error(
                6,
                f"CPX_ROUND_SEED={seed!r} must be an integer >= 0.",
                "It seeds the lottery of the sbba rules (NumPy refuses negative seeds).",
            )
        )
    for name in ("CPX_ROUND_INTERVAL_S", "CPX_SWEEP_INTERVAL_S", "CPX_PRICING_INTERVAL_S"):
        value = getattr(settings, name)
        if not _positive_number(value):
            errors.append(
                _error(7, f"{name}={value!r} must be a finite number of seconds > 0.", "See .env.example.")
            )
    horizon = settings.CPX_PRICING_HORIZON_H
    if not _positive_number(horizon):
        errors.append(
            _error(
                8,
                f"CPX_PRICING_HORIZON_H={horizon!r} must be a finite number of hours > 0.",
                "Prices count free capacity over this horizon; the default is 1.",
            )
        )
    recent = settings.CPX_PRICING_RECENT_ROUNDS
    if isinstance(recent, bool) or not isinstance(recent, int) or recent < 0:
        errors.append(
            _error(
                9,
                f"CPX_PRICING_RECENT_ROUNDS={recent!r} must be an integer >= 0.",
                "The recent rounds whose bids join the queued ones as demand; the default is 20.",
            )
        )
    clearing_rule = settings.CPX_CLEARING_RULE
    if clearing_rule not in CLEARING_RULES:
        errors.append(
            _error(
                13,
                f"CPX_CLEARING_RULE={clearing_rule!r} is not a clearing rule.",
                f"Use one of {', '.join(sorted(CLEARING_RULES))} (depth: the unit auction in thick "
                "classes, posted prices in thin ones; per_class: the unit auction in every class).",
            )
        )
    thick = settings.CPX_THICK_BOOK_MIN_ORDERS
    if isinstance(thick, bool) or not isinstance(thick, int) or thick < 1:
        errors.append(
            _error(
                14,
                f"CPX_THICK_BOOK_MIN_ORDERS={thick!r} must be an integer >= 1.",
                "The bids and free devices a class needs to clear by the unit auction; the default is 10.",
            )
        )
    errors += _tier_errors(settings)
    errors += _round_commit_errors(settings)
    errors += _money_errors(settings)
    errors += sla_errors(settings)
    if not errors:
        errors += _engine_errors(unit=unit, hetero=hetero, rule=rule, seed=seed, limit=limit)
    return errors


@checks.register(TAG)
def check_round_shards(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """CPX_ROUND_SHARDS and its timeout; shards need a broker and a result backend every worker shares."""
    from django.conf import settings

    shards, timeout = settings.CPX_ROUND_SHARDS, settings.CPX_ROUND_SHARD_TIMEOUT_S
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 64:
        return [
            _error(80, f"CPX_ROUND_SHARDS={shards!r} must be an integer in 1..64.", "1 clears in one task.")
        ]
    if not _positive_number(timeout) or timeout > 600:
        return [
            _error(
                81,
                f"CPX_ROUND_SHARD_TIMEOUT_S={timeout!r} must be a number of seconds in (0, 600].",
                "Keep it below the round task's own limit (120 s for the beat's rounds), so that a lost "
                "shard is given up before the round is.",
            )
        ]
    shared = ("redis://", "rediss://")
    if shards > 1 and not (
        settings.CELERY_BROKER_URL.startswith(shared) and settings.CELERY_RESULT_BACKEND.startswith(shared)
    ):
        return [
            _error(
                82,
                f"CPX_ROUND_SHARDS={shards} needs CELERY_BROKER_URL and CELERY_RESULT_BACKEND on Redis.",
                "The shards of a round travel to other workers and back; in-process brokers and result "
                "backends reach no other worker. Set both to redis://…, or CPX_ROUND_SHARDS=1.",
            )
        ]
    return []


def _round_commit_errors(settings) -> list[checks.CheckMessage]:
    """The match on chain (issue 12): rounds per commit transaction and how often the task runs."""
    errors = []
    batch = settings.CPX_ROUND_COMMIT_BATCH
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 500:
        errors.append(
            _error(
                70,
                f"CPX_ROUND_COMMIT_BATCH={batch!r} must be an integer from 1 to 500.",
                "Rounds committed per transaction; the default is 20 (500 stays far inside a block's gas).",
            )
        )
    if not _positive_number(settings.CPX_ROUND_COMMIT_INTERVAL_S):
        errors.append(
            _error(
                71,
                f"CPX_ROUND_COMMIT_INTERVAL_S={settings.CPX_ROUND_COMMIT_INTERVAL_S!r} must be a finite "
                "number of seconds > 0.",
                "See .env.example.",
            )
        )
    return errors


def _money_errors(settings) -> list[checks.CheckMessage]:
    errors = []
    try:
        fee = Decimal(settings.CPX_PLATFORM_FEE_RATE)
    except (InvalidOperation, TypeError, ValueError):
        fee = None
    if fee is None or not fee.is_finite() or not Decimal(0) <= fee < 1:
        errors.append(
            _error(
                10,
                f"CPX_PLATFORM_FEE_RATE={settings.CPX_PLATFORM_FEE_RATE!r} must be a decimal in [0, 1).",
                "The platform's share of each payment, e.g. 0.05.",
            )
        )
    try:
        budget = Decimal(settings.CPX_MAX_JOB_BUDGET)
    except (InvalidOperation, TypeError, ValueError):
        budget = None
    if budget is None or not budget.is_finite() or budget <= 0:
        errors.append(
            _error(
                11,
                f"CPX_MAX_JOB_BUDGET={settings.CPX_MAX_JOB_BUDGET!r} must be a decimal > 0.",
                "The largest budget a job may carry; the default is 1000000.",
            )
        )
    return errors


def _engine_errors(
    *, unit: str, hetero: str, rule: str, seed: int, limit: float
) -> list[checks.CheckMessage]:
    """The engine clears a two-order book with the configured rules (well under a second)."""
    from auctions.mechanisms import MechanismError, clear

    unit_book = {
        "mechanism": unit,
        "seed": seed,
        "bids": [{"id": "b1", "price": 2.0}, {"id": "b2", "price": 1.0}],
        "asks": [{"id": "s1", "price": 0.5}, {"id": "s2", "price": 1.5}],
    }
    hetero_book = {
        "mechanism": hetero,
        "payment_rule": rule,
        "time_limit_s": limit,
        "jobs": [
            {"id": "j1", "bid": 4.0, "gpus": 1, "vram_per_gpu": 16.0, "vcpu": 1.0, "ram": 8.0}
            | {"base_hours": 1.0, "deadline_hours": 2.0}
        ],
        "providers": [
            {"id": "p1", "gpus": 1, "vram_per_gpu": 24.0, "vcpu": 4.0, "ram": 16.0}
            | {"speed": 1.0, "ask_per_gpu_hour": 1.0}
        ],
    }
    errors = []
    for setting, book in (("CPX_UNIT_MECHANISM", unit_book), ("CPX_HETEROGENEOUS_MECHANISM", hetero_book)):
        try:
            clear(book)
        except MechanismError as error:
            errors.append(
                _error(
                    12,
                    f"The engine refuses {setting}={book['mechanism']}: {error.code}: {error.message}",
                    "Check the clearing settings against the README's list of rules.",
                )
            )
    return errors


def refuse_to_start() -> None:
    """Run the market's checks and exit with their messages when any fails: for processes that Django's
    own check run does not cover (the Celery worker). Raises SystemExit."""
    import django

    django.setup()
    from django.core.checks import run_checks

    failed = [m for m in run_checks(tags=[TAG]) if m.is_serious() and not m.is_silenced()]
    if failed:
        lines = "\n".join(str(m) for m in failed)  # "?: (auctions.E003) message\n\tHINT: hint"
        raise SystemExit(f"CPX will not start: the clearing and pricing settings are invalid.\n{lines}")


def _tier_errors(settings) -> list:
    """Cloud–edge tiers (auctions/services/tier_books.py): the mode and the game's substitution."""
    from auctions.services.tier_books import TIER_MODES

    errors = []
    mode = settings.CPX_TIER_CLEARING
    if mode not in TIER_MODES:
        errors.append(
            _error(
                30,
                f"CPX_TIER_CLEARING={mode!r} is not a tier mode.",
                "Use aware (latency-bound jobs take edge devices first, the cloud is the overflow) or off.",
            )
        )
    theta = settings.CPX_TIER_SUBSTITUTION
    if isinstance(theta, bool) or not isinstance(theta, int | float) or not 0 <= theta < 1:
        errors.append(
            _error(
                31,
                f"CPX_TIER_SUBSTITUTION={theta!r} must be a number in [0, 1).",
                "How far a tier's price moves the other tier's demand in the tier game; the default is 0.5.",
            )
        )
    return errors


@checks.register(TAG)
def check_backup_pool_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The backup pool's policy, share and standby fee (auctions.services.backup_pool)."""
    from django.conf import settings

    from auctions.services.backup_pool import POLICIES

    errors = []
    policy = settings.CPX_BACKUP_POOL_POLICY
    if policy not in POLICIES:
        errors.append(
            _error(
                40,
                f"CPX_BACKUP_POOL_POLICY={policy!r} is not a backup-pool policy.",
                f"Use one of {', '.join(POLICIES)} (opt_in: jobs submitted with standby=true).",
            )
        )
    share = settings.CPX_BACKUP_POOL_SHARE
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        errors.append(
            _error(
                41,
                f"CPX_BACKUP_POOL_SHARE={share!r} must be a number from 0 to 1.",
                "The share of a round's idle devices the pool may hold in standby; the default is 0.5.",
            )
        )
    try:
        rate = Decimal(settings.CPX_STANDBY_FEE_RATE)
    except (InvalidOperation, TypeError, ValueError):
        rate = None
    if rate is None or not rate.is_finite() or not Decimal(0) <= rate <= 1:
        errors.append(
            _error(
                42,
                f"CPX_STANDBY_FEE_RATE={settings.CPX_STANDBY_FEE_RATE!r} must be a decimal in [0, 1].",
                "The standby fee as a share of the running lease's expected cost, e.g. 0.05.",
            )
        )
    return errors

"""Production: everything from base, but secrets and money-moving configuration are demanded,
never defaulted, and cookies and transport are locked down."""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=3600)
SECURE_CONTENT_TYPE_NOSNIFF = True

# Money moves on chain only against a chain named here: no in-process EVM, no default key or address.
CPX_SETTLEMENT_ON_CHAIN = env.bool("CPX_SETTLEMENT_ON_CHAIN")
if CPX_SETTLEMENT_ON_CHAIN:
    CHAIN_RPC_URL = env.str("CHAIN_RPC_URL")
    CHAIN_SIGNER_KEY = env.str("CHAIN_SIGNER_KEY")
    CHAIN_CONTRACT_ADDRESS = env.str("CHAIN_CONTRACT_ADDRESS")
    # A deposit credited at 0 confirmations is one reorg away from being credited twice or never made.
    CHAIN_CONFIRMATIONS = env.int("CHAIN_CONFIRMATIONS", default=12)
    if CHAIN_CONFIRMATIONS < 1:
        raise ImproperlyConfigured("CHAIN_CONFIRMATIONS must be at least 1 in production")

"""Production: everything from base, but secrets and money-moving configuration are demanded,
never defaulted, and cookies and transport are locked down."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env, logging_config, postgresql_pool

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"] = postgresql_pool(DATABASES["default"])
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
# Results an operator can query: the database (admin → Task results), not a worker's memory.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")

# Static files: `collectstatic` copies them with hashed names and compresses them; whitenoise serves
# that copy with far-future caching.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = False

# One JSON object per line, with request ids and Celery task ids; one line per request.
CPX_LOG_FORMAT = env.str("CPX_LOG_FORMAT", default="json")
CPX_ACCESS_LOG = env.bool("CPX_ACCESS_LOG", default=True)
LOGGING = logging_config(fmt=CPX_LOG_FORMAT, level=env.str("CPX_LOG_LEVEL", default="INFO"))

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
# Plain HTTP is redirected to HTTPS (the proxy in front terminates TLS and sets X-Forwarded-Proto),
# except the probes and the scrape, which come from inside. DJANGO_SECURE_SSL_REDIRECT=false only
# where nothing terminates TLS (the local topology of `make production`).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# Money moves on chain only against a chain named here: no in-process EVM, no default key or address.
CPX_SETTLEMENT_ON_CHAIN = env.bool("CPX_SETTLEMENT_ON_CHAIN")
if CPX_SETTLEMENT_ON_CHAIN:
    CHAIN_RPC_URL = env.str("CHAIN_RPC_URL")
    CHAIN_SIGNER_KEY = env.str("CHAIN_SIGNER_KEY")
    CHAIN_CONTRACT_ADDRESS = env.str("CHAIN_CONTRACT_ADDRESS")

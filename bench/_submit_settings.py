"""Bench-only settings for bench/api_submit.py: the normal settings, DEBUG off, plus one URL for the
bare Django view that the API is compared against. Never used outside the bench."""

from config.settings.base import *  # noqa: F403

DEBUG = False
ROOT_URLCONF = "bench._submit_urls"

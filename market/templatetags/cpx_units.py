"""Price units on the pages (the definitions are in market/units.py)."""

from decimal import Decimal

from django import template
from django.conf import settings

from market.units import after_platform_fee, per_reference_device_hour

register = template.Library()


@register.filter
def per_reference(price, speed) -> Decimal | None:
    """A per-device-hour price on hardware of `speed`, per reference device-hour (price ÷ speed)."""
    return None if price is None or not speed else per_reference_device_hour(price, speed)


@register.filter
def after_fee(amount) -> Decimal | None:
    """What a provider keeps of `amount` after the platform fee."""
    return None if amount is None else after_platform_fee(amount)


@register.simple_tag
def fee_percent() -> str:
    """The platform fee as a percentage, e.g. "5"."""
    return f"{(settings.CPX_PLATFORM_FEE_RATE * 100).normalize():f}"

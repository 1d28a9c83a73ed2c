"""Price units, defined once (README, "Prices: one unit").

Every price a user sees is stated per *reference device-hour*: one hour of one device of speed 1
in its class (`Resource.speed_factor` is a device's throughput relative to that reference, so a
device of speed s does s reference device-hours of work in an hour). A listing's ask and a lease's
prices are per device-hour of that hardware; ÷ its speed gives the reference figure, which pages
and the API show with the hardware's per-device-hour figure beside it. A provider's earnings are
shown after the platform fee (CPX_PLATFORM_FEE_RATE), as the ledger pays them. The currency's name
is CPX_CURRENCY.
"""

from decimal import Decimal

from django.conf import settings

from market.money import to_money


def per_reference_device_hour(price_per_device_hour, speed_factor) -> Decimal:
    """A per-device-hour price on hardware of `speed_factor`, per reference device-hour (÷ speed)."""
    return to_money(Decimal(price_per_device_hour) / Decimal(speed_factor))


def after_platform_fee(amount) -> Decimal:
    """What a provider keeps of `amount` after the platform fee."""
    return to_money(Decimal(amount) * (1 - settings.CPX_PLATFORM_FEE_RATE))


def price_unit() -> str:
    """The unit of every price, in words: e.g. "USDC per reference device-hour"."""
    return f"{settings.CPX_CURRENCY} per reference device-hour"

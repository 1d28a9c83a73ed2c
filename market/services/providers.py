"""Providers and their resource listings; a provider changes only its own."""

from django.db import IntegrityError, transaction
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from config.errors import Conflict, InvalidInput, NotFound
from market.models import Provider, Resource, User
from market.services.placement import region_check


def wallet_address_checked(address: str) -> str:
    """An EIP-55 address: a mixed-case one must carry a valid checksum; an all-lower-case one
    (no checksum to check) is returned checksummed. Raises InvalidInput."""
    if not isinstance(address, str) or not is_hex_address(address):
        raise InvalidInput("Not an Ethereum address (0x and 40 hex digits).", field="wallet_address")
    body = address[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(address):
        raise InvalidInput("The address fails its EIP-55 checksum: check for a typo.", field="wallet_address")
    return to_checksum_address(address)


@transaction.atomic
def provider_register(
    *, user: User, display_name: str, wallet_address: str, region: str, **fields
) -> Provider:
    """Create the provider profile of a provider user. Raises InvalidInput (UnknownRegion among
    them), Conflict (already has one)."""
    if not user.holds_role(User.Role.PROVIDER):
        raise InvalidInput("Only provider accounts can register a provider profile.")
    region = region_check(region)
    try:
        with transaction.atomic():
            return Provider.objects.create(
                user=user,
                display_name=display_name,
                wallet_address=wallet_address_checked(wallet_address),
                region=region,
                **fields,
            )
    except IntegrityError:
        raise Conflict("This account already has a provider profile.") from None


def provider_update(*, provider: Provider, **fields) -> Provider:
    """Change a provider's own profile fields (status and reputation are the operators')."""
    if "wallet_address" in fields:
        fields["wallet_address"] = wallet_address_checked(fields["wallet_address"])
    if "region" in fields:
        fields["region"] = region_check(fields["region"])
    for name, value in fields.items():
        setattr(provider, name, value)
    provider.save(update_fields=list(fields))
    return provider


def _check_resource(fields: dict, current: Resource | None = None) -> None:
    def value(name):
        return fields[name] if name in fields else getattr(current, name, None)

    floor, ask = value("price_floor") or 0, value("ask_per_device_hour")
    if ask is not None and ask < floor:
        raise InvalidInput("The ask cannot be below the price floor.", field="ask_per_device_hour")
    start, end = value("available_from"), value("available_until")
    if start and end and end <= start:
        raise InvalidInput("The availability window ends before it starts.", field="available_until")


@transaction.atomic
def resource_create(*, provider: Provider, **fields) -> Resource:
    """List a resource for the provider. Raises InvalidInput."""
    _check_resource(fields)
    return Resource.objects.create(provider=provider, **fields)


@transaction.atomic
def resource_update(*, provider: Provider, resource_id: int, **fields) -> Resource:
    """Change one of the provider's own listings. Raises NotFound (also for another's), InvalidInput,
    Conflict (a retired listing stays retired)."""
    resource = Resource.objects.select_for_update().filter(pk=resource_id, provider=provider).first()
    if resource is None:
        raise NotFound("No such resource.", resource=resource_id)
    if resource.status == Resource.Status.RETIRED:
        raise Conflict("A retired resource cannot be changed.", status=resource.status)
    _check_resource(fields, resource)
    for name, value in fields.items():
        setattr(resource, name, value)
    resource.save()
    return resource


def resource_retire(*, provider: Provider, resource_id: int) -> Resource:
    """Take a listing off the market for good (its history stays)."""
    return resource_update(provider=provider, resource_id=resource_id, status=Resource.Status.RETIRED)

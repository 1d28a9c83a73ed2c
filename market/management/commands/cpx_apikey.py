"""`cpx_apikey create --user NAME --role ROLE [--name LABEL]` prints a new key (shown once);
`cpx_apikey revoke PREFIX` revokes one; `cpx_apikey list [--user NAME]` lists keys without secrets."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from config.errors import DomainError
from market.models import ApiKey, Role, User
from market.services.accounts import api_key_create, api_key_revoke


class Command(BaseCommand):
    help = "Create, revoke or list API keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="issue a key; it is printed once and never stored")
        create.add_argument("--user", required=True, help="username")
        create.add_argument("--role", required=True, choices=Role.values)
        create.add_argument("--name", default="", help="a label to recognise the key by")
        revoke = sub.add_parser("revoke", help="revoke a key by its prefix (the part after cpx_)")
        revoke.add_argument("prefix")
        listing = sub.add_parser("list", help="list keys (prefix, role, user, state)")
        listing.add_argument("--user", default=None)

    def handle(self, *args, action, **options):
        now = timezone.now()
        try:
            if action == "create":
                user = User.objects.filter(username=options["user"]).first()
                if user is None:
                    raise CommandError(f"no user named {options['user']!r}")
                _, raw = api_key_create(user=user, role=options["role"], name=options["name"], now=now)
                self.stdout.write(raw)
            elif action == "revoke":
                key = api_key_revoke(prefix=options["prefix"].removeprefix("cpx_").split("_")[0], now=now)
                self.stdout.write(f"revoked cpx_{key.prefix}… of {key.user.username}")
            else:
                keys = ApiKey.objects.select_related("user").order_by("created_at")
                if options["user"]:
                    keys = keys.filter(user__username=options["user"])
                for key in keys:
                    state = "active" if key.is_active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
                    self.stdout.write(
                        f"cpx_{key.prefix}  {key.role:9} {key.user.username:20} {state}  {key.name}"
                    )
        except DomainError as error:
            raise CommandError(f"{error.code}: {error.message}") from None

"""Role checks: an API key acts only in its own role; a browser session in its user's role."""

from rest_framework.permissions import BasePermission

from market.models import ApiKey, Role


class _HasRole(BasePermission):
    role: str = ""
    message = "This needs a {role} account or API key."

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        if isinstance(request.auth, ApiKey):
            allowed = request.auth.role == self.role and request.user.holds_role(self.role)
        else:
            allowed = request.user.holds_role(self.role)
        if not allowed:
            self.message = self.message.format(role=self.role)
        return allowed


class IsProvider(_HasRole):
    role = Role.PROVIDER
    # Every provider endpoint but registration answers 404 until the provider profile exists
    # (the OpenAPI schema documents it from this flag: config.openapi).
    missing_profile_is_404 = True


class IsConsumer(_HasRole):
    role = Role.CONSUMER


class IsOperator(_HasRole):
    role = Role.OPERATOR

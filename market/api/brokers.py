"""Broker endpoints (MECM's middle tier, issue 12): principals appoint and revoke brokers; a broker
lists its principals and fees and acts for them. Thin: one service or selector call each."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from config.openapi import ErrorSerializer
from market.api import serializers as s
from market.api.permissions import _HasRole
from market.api.views import IDEMPOTENCY_HEADER, idempotency_key
from market.broker_selectors import (
    broker_appointments_of,
    broker_balance,
    broker_fees_earned,
    broker_principal_list,
)
from market.models import ApiKey, Role
from market.services.brokers import broker_appoint, broker_job_submit, broker_resource_update, broker_revoke


class IsBroker(_HasRole):
    role = Role.BROKER


class IsPrincipal(BasePermission):
    """A provider or consumer (by session, or by a key in the user's own role)."""

    message = "This needs a provider or consumer account or API key."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated and user.role in (Role.PROVIDER, Role.CONSUMER)):
            return False
        return not isinstance(request.auth, ApiKey) or request.auth.role == user.role


class AppointmentSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    broker = serializers.CharField(source="broker.username", read_only=True)
    principal = serializers.CharField(source="principal.username", read_only=True)
    side = serializers.CharField(read_only=True)
    fee_rate = serializers.DecimalField(max_digits=7, decimal_places=6, read_only=True)
    status = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)


class AppointSerializer(s.StrictSerializerMixin, serializers.Serializer):
    broker = serializers.CharField(max_length=150)
    fee_rate = serializers.DecimalField(max_digits=7, decimal_places=6)


class FeeRowSerializer(serializers.Serializer):
    principal = serializers.CharField(source="principal__username")
    side = serializers.CharField()
    earned = serializers.DecimalField(max_digits=24, decimal_places=6)
    trades = serializers.IntegerField()


class BrokerFeesSerializer(serializers.Serializer):
    balance = serializers.DecimalField(max_digits=24, decimal_places=6)
    by_principal = FeeRowSerializer(many=True)


class AppointmentListView(APIView):
    """The caller's brokers (GET); appoint one to trade your side at a fee rate (POST)."""

    permission_classes = [IsPrincipal]

    @extend_schema(responses=AppointmentSerializer(many=True))
    def get(self, request):
        return Response(AppointmentSerializer(broker_appointments_of(principal=request.user), many=True).data)

    @extend_schema(
        request=AppointSerializer, responses={201: AppointmentSerializer, 404: ErrorSerializer}
    )  # broker_not_found
    def post(self, request):
        body = AppointSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        appointment = broker_appoint(
            principal=request.user,
            broker_username=body.validated_data["broker"],
            fee_rate=body.validated_data["fee_rate"],
            now=timezone.now(),
        )
        return Response(AppointmentSerializer(appointment).data, status=status.HTTP_201_CREATED)


class AppointmentRevokeView(APIView):
    """End an appointment: the principal or the broker may (anyone else: 404)."""

    @extend_schema(request=None, responses=AppointmentSerializer)
    def post(self, request, pk):
        appointment = broker_revoke(appointment_id=pk, by=request.user, now=timezone.now())
        return Response(AppointmentSerializer(appointment).data)


class BrokerPrincipalListView(APIView):
    """The broker's principals: every appointment, newest first."""

    permission_classes = [IsBroker]

    @extend_schema(responses=AppointmentSerializer(many=True))
    def get(self, request):
        return Response(AppointmentSerializer(broker_principal_list(broker=request.user), many=True).data)


class BrokerFeesView(APIView):
    """The broker's fee balance and the fees earned per principal."""

    permission_classes = [IsBroker]

    @extend_schema(responses=BrokerFeesSerializer)
    def get(self, request):
        data = {
            "balance": broker_balance(broker=request.user),
            "by_principal": broker_fees_earned(broker=request.user),
        }
        return Response(BrokerFeesSerializer(data).data)


class BrokerJobSubmitView(APIView):
    """Submit a job for a consumer principal (its balance pays; the broker's fee is charged at settlement)."""

    permission_classes = [IsBroker]

    @extend_schema(
        request=s.JobSubmitSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: s.JobSubmittedSerializer, 200: s.JobSubmittedSerializer},
    )
    def post(self, request, username):
        key = idempotency_key(request)
        body = s.JobSubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job, created = broker_job_submit(
            broker=request.user,
            principal_username=username,
            spec=body.validated_data,
            now=timezone.now(),
            idempotency_key=key,
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(s.JobSubmittedSerializer(job).data, status=code)


class BrokerResourceView(APIView):
    """Change a provider principal's listing for it (asks, floor, availability)."""

    permission_classes = [IsBroker]

    @extend_schema(request=s.ResourceSerializer, responses=s.ResourceSerializer)
    def patch(self, request, username, pk):
        body = s.ResourceSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        resource = broker_resource_update(
            broker=request.user, principal_username=username, resource_id=pk, **body.validated_data
        )
        return Response(s.ResourceSerializer(resource).data)

"""HTML forms of the pages. Each market form is the API's serializer in HTML clothes: the Django
fields only render inputs (labels, widgets, hints); every rule — types, ranges, lengths, choices,
required fields — is the serializer's, so a page and the API accept and refuse exactly the same
input. Rules across fields and state stay in the services; `add_domain_error` puts their errors
next to the field they name."""

from django import forms
from django.contrib.auth.forms import UserCreationForm
from rest_framework import serializers as drf

from config.errors import DomainError
from market.api.serializers import JobSubmitSerializer, ProviderSerializer, ResourceSerializer
from market.models import JobRequest, Role, User
from market.services.placement import region_names


class SerializerForm(forms.Form):
    """A form whose fields mirror `serializer_class`'s and whose validation IS the serializer's.

    `fields_order` names the serializer fields shown; `labels` and `hints` say them in words. After
    `is_valid()`, `validated_data` is the serializer's validated payload (what the service takes).
    """

    serializer_class: type[drf.Serializer]
    fields_order: tuple[str, ...] = ()
    labels: dict[str, str] = {}
    hints: dict[str, str] = {}

    def __init__(self, data=None, *, instance=None, partial: bool = False, **kwargs):
        super().__init__(data, **kwargs)
        self.instance = instance
        self.partial = partial
        self.validated_data: dict = {}
        described = self._described = self.serializer_class().fields
        for name in self.fields_order:
            self.fields[name] = _html_field(
                described[name], label=self.labels.get(name), hint=self.hints.get(name, ""), partial=partial
            )
        if instance is not None and data is None:
            self.initial = {name: _initial(getattr(instance, name, None)) for name in self.fields_order}

    def clean(self):
        payload = {}
        for name in self.fields_order:
            value = self.cleaned_data.get(name)
            if isinstance(self.fields[name], forms.BooleanField):
                payload[name] = bool(value)
            elif value not in (None, ""):
                payload[name] = value.strip() if isinstance(value, str) else value
            elif self.instance is not None and getattr(self._described[name], "allow_null", False):
                payload[name] = None  # emptied on an edit: the optional value is cleared
        serializer = self.serializer_class(self.instance, data=payload, partial=self.partial)
        if serializer.is_valid():
            self.validated_data = dict(serializer.validated_data)
        else:
            for name, messages in serializer.errors.items():
                for message in messages if isinstance(messages, list) else [messages]:
                    self.add_error(name if name in self.fields else None, str(message))
        return self.cleaned_data

    def add_domain_error(self, error: DomainError) -> None:
        """A service's refusal, beside the field it names (or above the form)."""
        field = error.extra.get("field")
        self.add_error(field if field in self.fields else None, error.message)


def _html_field(described: drf.Field, *, label, hint: str, partial: bool) -> forms.Field:
    required = described.required and not partial
    attrs = {"aria-required": "true"} if required else {}
    common = {"required": False, "label": label or described.label, "help_text": hint}
    field = _html_widget_field(described, attrs=attrs, common=common)
    field.cpx_required = required  # the template marks it; the serializer enforces it
    return field


def _html_widget_field(described: drf.Field, *, attrs: dict, common: dict) -> forms.Field:
    if isinstance(described, drf.BooleanField):
        return forms.BooleanField(**common)
    if isinstance(described, drf.ChoiceField):
        # A blank first option: nothing is chosen for the person (the serializer's default applies).
        choices = [("", "—"), *described.choices.items()]
        if described.default is not drf.empty:
            common["initial"] = described.default
        return forms.CharField(widget=forms.Select(choices=choices, attrs=attrs), **common)
    if isinstance(described, drf.DateTimeField):
        attrs["type"] = "datetime-local"
        return forms.CharField(widget=forms.DateTimeInput(attrs=attrs, format="%Y-%m-%dT%H:%M"), **common)
    if isinstance(described, drf.IntegerField | drf.DecimalField | drf.FloatField):
        attrs.update({"inputmode": "decimal", "step": "any"})
        return forms.CharField(widget=forms.NumberInput(attrs=attrs), **common)
    max_length = getattr(described, "max_length", None)
    if max_length:
        attrs["maxlength"] = str(max_length)
    return forms.CharField(widget=forms.TextInput(attrs=attrs), **common)


def _initial(value):
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%dT%H:%M")
    return value


class ProviderProfileForm(SerializerForm):
    serializer_class = ProviderSerializer
    fields_order = ("display_name", "wallet_address", "tier", "region", "site", "latitude", "longitude")
    labels = {"display_name": "Name shown to the market", "wallet_address": "Wallet address (EIP-55)"}
    hints = {
        "wallet_address": "0x and 40 hex digits; where on-chain settlement pays you.",
        "region": "e.g. eu-west — consumers' latency SLAs are measured from their region to yours.",
        "latitude": "Optional; sharpens latency estimates.",
    }


class ResourceForm(SerializerForm):
    serializer_class = ResourceSerializer
    fields_order = (
        "device_class",
        "model_name",
        "device_count",
        "memory_per_device_gib",
        "host_ram_gib",
        "vcpu",
        "fp16_tflops",
        "speed_factor",
        "interconnect",
        "ask_per_device_hour",
        "price_floor",
        "auto_pricing",
        "available_from",
        "available_until",
    )
    labels = {
        "model_name": "Device model",
        "device_count": "Devices on this node",
        "memory_per_device_gib": "Memory per device (GiB)",
        "host_ram_gib": "Host RAM (GiB)",
        "vcpu": "vCPUs",
        "fp16_tflops": "FP16 TFLOPS",
        "speed_factor": "Speed factor",
        "ask_per_device_hour": "Your ask per device-hour of this device",
        "price_floor": "Price floor per device-hour",
        "auto_pricing": "Auto-pricing: follow the recommended ask (never below the floor)",
        "available_from": "Available from (UTC)",
        "available_until": "Available until (UTC)",
    }
    hints = {
        "model_name": "e.g. RTX 4090, A100-80G, Jetson AGX Orin",
        "speed_factor": "Throughput relative to the class reference (1 = reference).",
        "ask_per_device_hour": "What one device-hour costs a consumer at least.",
        "price_floor": "Auto-pricing never asks below this.",
        "available_from": "Leave both empty to be available now and until you pause the listing.",
    }


class ResourceEditForm(ResourceForm):
    fields_order = (*ResourceForm.fields_order, "status")
    labels = {**ResourceForm.labels, "status": "Listing status"}
    hints = {**ResourceForm.hints, "status": "Paused listings leave the book; retired ones stay retired."}


class JobForm(SerializerForm):
    serializer_class = JobSubmitSerializer

    def unfinished(self) -> dict:
        """What a bound form still lacks — required fields left empty, not an error while typing —
        and the errors of what was typed, so an untouched form shows no "This field is required"."""
        if not self.is_bound or not self.errors:
            return {"missing": [], "typed_errors": []}
        data = self.data
        missing = [
            field.label
            for name, field in self.fields.items()
            if getattr(field, "cpx_required", False) and not data.get(name)
        ]
        typed = [
            (self.fields[name].label if name in self.fields else "", " ".join(errors))
            for name, errors in self.errors.items()
            if name not in self.fields or data.get(name)
        ]
        return {"missing": missing, "typed_errors": typed}

    fields_order = (
        "kind",
        "model_name",
        "params_billion",
        "quant_bits",
        "context_length",
        "batch_size",
        "workload_tokens",
        "workload_device_hours",
        "device_class",
        "region",
        "latency_sla_ms",
        "placement",
        "max_price_per_device_hour",
        "budget",
        "deadline",
        "requested_memory_per_device_gib",
        "requested_device_count",
        "standby",
    )
    labels = {
        "model_name": "Model",
        "params_billion": "Parameters (billions)",
        "quant_bits": "Quantisation (bits)",
        "context_length": "Context length (tokens)",
        "batch_size": "Batch size",
        "workload_tokens": "Tokens to process (inference)",
        "workload_device_hours": "Device-hours (training / fine-tuning)",
        "device_class": "Device class",
        "region": "Your region",
        "latency_sla_ms": "Latency SLA (ms round trip)",
        "placement": "Placement",
        "max_price_per_device_hour": "Max price per reference device-hour (your bid)",
        "budget": "Budget (held in escrow, whole job)",
        "deadline": "Deadline (UTC)",
        "requested_memory_per_device_gib": "Memory per device (GiB)",
        "requested_device_count": "Devices",
        "standby": "Keep a standby (backup pool): restart at once if the provider fails, for a fee",
    }
    hints = {
        "model_name": "e.g. llama-3.1-8b-instruct",
        "workload_tokens": "Inference jobs state tokens.",
        "workload_device_hours": "Training and fine-tuning jobs state device-hours.",
        "region": "One of the regions CPX knows (the market page lists them), e.g. eu-west.",
        "latency_sla_ms": "Optional; only providers within it are matched (placement is then strict).",
        "placement": "Strict: only in your region (or within your SLA). Preferred (default without an "
        "SLA): your region first, any region otherwise.",
        "max_price_per_device_hour": "Per reference device-hour: one hour of one speed-1 device of the "
        "class; the market page lists recent prices in the same unit.",
        "budget": "Unused budget returns to your balance when the job ends.",
        "requested_memory_per_device_gib": "Optional; CPX sizes the job from the model when empty.",
        "requested_device_count": "Optional; sized from the model when empty.",
        "standby": "The fee is a small share of the job's cost, escrowed from your balance while it runs.",
    }


class JobFilterForm(forms.Form):
    """The job list's filters (GET); an unknown value is ignored as if not given."""

    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *JobRequest.Status.choices])
    kind = forms.ChoiceField(required=False, choices=[("", "Any kind"), *JobRequest.Kind.choices])
    region = forms.ChoiceField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["region"].choices = [("", "Any region"), *((name, name) for name in region_names())]

    def filters(self) -> dict:
        """The lookups to apply: the valid, non-empty fields."""
        self.is_valid()  # cleaned_data then holds the valid fields only
        return {name: value for name, value in self.cleaned_data.items() if value}


class JobWithFileForm(JobForm):
    """The submit page: the job's fields, and optionally its input file (an OpenAI Batch JSONL file
    for inference, a dataset for training or fine-tuning), kept through the files service."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["input_file"] = forms.FileField(
            required=False,
            label="Input file (optional)",
            help_text="Inference: an OpenAI Batch JSONL file whose requests name the model above "
            "(tokens are then counted from it). Training: a dataset.",
        )


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        required=False,
        label="Key name",
        help_text="e.g. the machine the agent runs on; shown in this list only.",
    )


class SignUpForm(UserCreationForm):
    """A provider, consumer or broker account (operators are made by operators, in the admin)."""

    role = forms.ChoiceField(
        choices=[
            (Role.PROVIDER, "Provider — I sell computing power"),
            (Role.CONSUMER, "Consumer — I run jobs"),
            (Role.BROKER, "Broker — I trade for providers or consumers who appoint me"),
        ],
        widget=forms.RadioSelect,
        label="I am a",
    )
    email = forms.EmailField(required=False, label="Email (optional)")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email", "role")

"""REST API: campaigns (CRUD, dry run, launch, pause, resume, cancel, progress), transactional messages."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from audiences.api import actor_of
from audiences.models import ADDRESS_FIELD, Consent, ConsentStatus, Contact, ContactList, Segment, Suppression
from channels.models import ChannelAccount
from marketing_hub.api.errors import ApiError, ErrorCode
from marketing_hub.api.fields import BrandField, ScopedRelatedField
from marketing_hub.api.mixins import BrandScopedViewSetMixin

from . import services
from .models import Campaign, CampaignChannel, Message, MessageStatus, MessageTemplate, TemplatePurpose, Variant
from .planner import PlanningError, dry_run


class CampaignChannelSerializer(serializers.ModelSerializer):
    account = ScopedRelatedField(queryset=ChannelAccount.objects.all())
    template = ScopedRelatedField(queryset=MessageTemplate.objects.all())
    channel = serializers.CharField(read_only=True)

    class Meta:
        model = CampaignChannel
        fields = ["position", "account", "template", "channel"]


class VariantSerializer(serializers.ModelSerializer):
    template = ScopedRelatedField(queryset=MessageTemplate.objects.all(), required=False, allow_null=True)

    class Meta:
        model = Variant
        fields = ["id", "name", "weight", "template", "is_winner"]
        read_only_fields = ["is_winner"]


class CampaignSerializer(serializers.ModelSerializer):
    brand = BrandField()
    segments = ScopedRelatedField(queryset=Segment.objects.all(), many=True, required=False)
    lists = ScopedRelatedField(queryset=ContactList.objects.all(), many=True, required=False)
    exclude_segments = ScopedRelatedField(queryset=Segment.objects.all(), many=True, required=False)
    exclude_lists = ScopedRelatedField(queryset=ContactList.objects.all(), many=True, required=False)
    channels = CampaignChannelSerializer(many=True, required=False)
    variants = VariantSerializer(many=True, required=False)

    class Meta:
        model = Campaign
        fields = [
            "id", "brand", "name", "goal", "status", "segments", "lists", "exclude_segments", "exclude_lists",
            "channel_mode", "channels", "variants", "ab_test_share", "schedule_kind", "scheduled_at", "local_time",
            "crontab", "priority", "frequency_cap", "budget_cap", "daily_cap", "created_at", "updated_at",
            "launched_at", "completed_at",
        ]  # fmt: skip
        read_only_fields = ["status", "created_at", "updated_at", "launched_at", "completed_at"]

    def validate(self, attrs):
        brand = attrs.get("brand") or getattr(self.instance, "brand", None)
        for name in ("segments", "lists", "exclude_segments", "exclude_lists"):
            for obj in attrs.get(name, []):
                if obj.brand_id != brand.pk:
                    raise serializers.ValidationError({name: [f"{obj} belongs to another brand."]})
        for index, step in enumerate(attrs.get("channels", [])):
            for key in ("account", "template"):
                if step[key].brand_id != brand.pk:
                    raise serializers.ValidationError({f"channels.{index}.{key}": ["Belongs to another brand."]})
        if self.instance is not None and self.instance.status != "draft":
            raise serializers.ValidationError({"status": ["Only a draft campaign can be edited; duplicate it."]})
        priority = attrs.get("priority")
        if priority is not None and not 1 <= priority <= 10:
            raise serializers.ValidationError({"priority": ["Priority is between 1 and 10."]})
        instance = Campaign(**{k: v for k, v in attrs.items() if k not in self._nested})
        try:
            instance.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    _nested = ("segments", "lists", "exclude_segments", "exclude_lists", "channels", "variants")

    def _save_nested(self, campaign, data):
        for name in ("segments", "lists", "exclude_segments", "exclude_lists"):
            if name in data:
                getattr(campaign, name).set(data[name])
        if "channels" in data:
            campaign.channels.all().delete()
            for index, step in enumerate(data["channels"]):
                CampaignChannel.objects.create(
                    campaign=campaign, position=step.get("position", index), account=step["account"],
                    template=step["template"],
                )  # fmt: skip
        if "variants" in data:
            campaign.variants.all().delete()
            for variant in data["variants"]:
                Variant.objects.create(campaign=campaign, **variant)

    def create(self, validated_data):
        nested = {k: validated_data.pop(k) for k in self._nested if k in validated_data}
        with transaction.atomic():
            campaign = Campaign.objects.create(**validated_data)
            self._save_nested(campaign, nested)
        return campaign

    def update(self, instance, validated_data):
        nested = {k: validated_data.pop(k) for k in self._nested if k in validated_data}
        with transaction.atomic():
            for key, value in validated_data.items():
                setattr(instance, key, value)
            instance.save()
            self._save_nested(instance, nested)
        return instance


def _refusal(exc: Exception) -> ApiError:
    if isinstance(exc, services.IllegalTransition):
        return ApiError(ErrorCode.ILLEGAL_TRANSITION, str(exc), status.HTTP_409_CONFLICT)
    return ApiError(ErrorCode.INVALID, str(exc))


class CampaignViewSet(BrandScopedViewSetMixin, viewsets.ModelViewSet):
    """Campaigns of the caller's brands and their lifecycle actions."""

    queryset = Campaign.objects.prefetch_related("channels", "variants", "segments", "lists")
    serializer_class = CampaignSerializer
    filterset_fields = ["brand", "status"]
    ordering_fields = ["created_at", "priority", "name"]
    action_permissions = {
        "launch": "change", "pause": "change", "resume": "change", "cancel": "change", "duplicate": "add",
        "dry_run": "view", "progress": "view",
    }  # fmt: skip

    def perform_destroy(self, instance):
        try:
            services.delete(instance)
        except services.DeletionRefused as exc:
            raise ApiError(ErrorCode.CONFLICT, str(exc), status.HTTP_409_CONFLICT) from None

    def _act(self, func):
        campaign = self.get_object()
        try:
            result = func(campaign)
        except (services.IllegalTransition, PlanningError) as exc:
            raise _refusal(exc) from None
        campaign.refresh_from_db()
        return Response({"status": campaign.status, "result": result if isinstance(result, int) else None})

    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request, pk=None):
        try:
            return Response(dry_run(self.get_object()))
        except PlanningError as exc:
            raise _refusal(exc) from None

    @action(detail=True, methods=["post"])
    def launch(self, request, pk=None):
        return self._act(lambda c: services.launch(c, actor_of(request)) and None)

    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(lambda c: services.pause(c, actor_of(request)) and None)

    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(lambda c: services.resume(c, actor_of(request)) and None)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(lambda c: services.cancel(c, actor_of(request)))

    @action(detail=True, methods=["post"])
    def duplicate(self, request, pk=None):
        copy = services.duplicate(self.get_object(), actor_of(request))
        return Response(CampaignSerializer(copy, context={"request": request}).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["get"])
    def progress(self, request, pk=None):
        return Response(services.progress(self.get_object()))


# -- transactional messages ---------------------------------------------------------------------------------
class TransactionalSerializer(serializers.Serializer):
    brand = BrandField()
    contact = ScopedRelatedField(queryset=Contact.objects.all())
    template = ScopedRelatedField(queryset=MessageTemplate.objects.all())
    account = ScopedRelatedField(queryset=ChannelAccount.objects.all())
    context = serializers.DictField(required=False, default=dict, help_text="Extra template variables.")

    def validate_template(self, template: MessageTemplate) -> MessageTemplate:
        """Marketing content goes out in campaigns, under consent and the frequency cap; sent here it
        would bypass the cap (and a marketer's review), so only transactional templates are taken."""
        if template.purpose != TemplatePurpose.TRANSACTIONAL:
            raise serializers.ValidationError(
                "a marketing template; the transactional API sends transactional templates"
            )
        return template


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = [
            "id", "campaign", "contact", "channel", "account", "template", "status", "skip_reason", "attempts",
            "provider_message_id", "error_code", "error_message", "segments", "cost", "queued_at", "sent_at",
            "delivered_at", "created_at",
        ]  # fmt: skip


class MessageViewSet(
    BrandScopedViewSetMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.ListModelMixin,
    viewsets.GenericViewSet,
):  # fmt: skip
    """``POST`` sends one templated message to one contact now (transactional: no frequency cap).

    Send an ``Idempotency-Key`` header: a repeated request with the same key answers with the
    message created the first time and sends nothing again; the same key with a different request is
    refused (409). Only transactional templates; suppressed or unsubscribed addresses are refused (409).
    """

    queryset = Message.objects.all()
    serializer_class = MessageSerializer
    filterset_fields = ["campaign", "contact", "status", "channel"]

    @extend_schema(
        request=TransactionalSerializer,
        responses={201: MessageSerializer, 200: MessageSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=True)],
    )
    def create(self, request, *args, **kwargs):
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > 100:
            raise ApiError(ErrorCode.INVALID, "Idempotency-Key: send a header of 1 to 100 characters.",
                           fields={"Idempotency-Key": ["required, at most 100 characters"]})  # fmt: skip
        serializer = TransactionalSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        brand = data["brand"]
        self.check_create_allowed(brand)
        existing = Message.objects.filter(brand=brand, idempotency_key=key).first()
        if existing is not None:
            return _replayed(existing, data)
        for name in ("contact", "template", "account"):
            if data[name].brand_id != brand.pk:
                raise ApiError(
                    ErrorCode.INVALID, f"{name}: belongs to another brand.", fields={name: ["another brand"]}
                )
        contact, account = data["contact"], data["account"]
        channel = account.channel
        address = contact.address_for(channel) if channel in ADDRESS_FIELD else ""
        if channel in ADDRESS_FIELD and not address:
            raise ApiError(ErrorCode.INVALID, f"contact: has no {channel} address.", fields={"contact": ["no address"]})
        if address and Suppression.objects.filter(brand=brand, channel=channel, address=address).exists():
            raise ApiError(ErrorCode.CONFLICT, f"contact: {channel} address is suppressed.", status.HTTP_409_CONFLICT)
        consent = Consent.objects.filter(contact=contact, channel=channel).first()
        if consent is not None and consent.status == ConsentStatus.UNSUBSCRIBED:
            raise ApiError(ErrorCode.CONFLICT, f"contact: unsubscribed from {channel}.", status.HTTP_409_CONFLICT)
        try:
            with transaction.atomic():
                message = Message.objects.create(
                    brand=brand, contact=contact, channel=channel, account=account, template=data["template"],
                    marketing=False, priority=10, status=MessageStatus.PENDING, send_after=timezone.now(),
                    address=address or "", idempotency_key=key, context=data["context"],
                )  # fmt: skip
                transaction.on_commit(_kick)
        except IntegrityError:  # the same key, concurrently
            return _replayed(Message.objects.get(brand=brand, idempotency_key=key), data)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


def _replayed(message: Message, data: dict) -> Response:
    """The message an Idempotency-Key already made, when the request is the same one again (a retry).

    A key reused for another request (contact, template, account or context) would otherwise answer
    "sent" for a message that never went out: refused with 409 instead, so the client sees its bug."""
    asked = (data["contact"].pk, data["template"].pk, data["account"].pk, data["context"])
    made = (message.contact_id, message.template_id, message.account_id, message.context)
    if asked != made:
        raise ApiError(
            ErrorCode.CONFLICT,
            "Idempotency-Key: already used for a different request (contact, template, account or context); "
            "send a new key for a new message.",
            status.HTTP_409_CONFLICT,
            fields={"Idempotency-Key": ["used for a different request"]},
        )
    return Response(MessageSerializer(message).data, status=status.HTTP_200_OK)


def _kick():
    from .tasks import dispatch

    dispatch.apply_async(queue="default")

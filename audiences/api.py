"""REST API for audiences: contacts (CRUD, bulk upsert, consent, GDPR), lists, segments, suppressions."""

from django.db import IntegrityError, transaction
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from marketing_hub.api.errors import ApiError, ErrorCode
from marketing_hub.api.fields import BrandField
from marketing_hub.api.mixins import BrandScopedViewSetMixin
from marketing_hub.models import ApiKey

from . import services
from .models import Channel, ConsentStatus, Contact, ContactList, Segment, Suppression
from .normalize import clean_contact_fields
from .segments import RuleError, compile_rules
from .upsert import MAX_ITEMS, bulk_upsert

PREVIEW_SIZE = 50


def actor_of(request) -> str:
    if isinstance(request.auth, ApiKey):
        return f"api-key:{request.auth.prefix}"
    return f"user:{request.user.get_username()}"


class ContactSerializer(serializers.ModelSerializer):
    brand = BrandField()
    consents = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = [
            "id", "brand", "external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name",
            "last_name", "locale", "country", "time_zone", "attributes", "consents", "erased_at", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = ["erased_at", "created_at", "updated_at"]
        validators = []  # uniqueness is answered as 409 naming the field, see perform_create

    def get_consents(self, obj) -> dict[str, str]:
        return {consent.channel: consent.status for consent in obj.consents.all()}

    def to_internal_value(self, data):
        validated = super().to_internal_value(data)
        brand = validated.get("brand") or getattr(self.instance, "brand", None)
        raw = {key: data[key] for key in data if key in self.Meta.fields and key not in ("brand", "id")}
        values, errors = clean_contact_fields(raw, brand.default_region if brand else "")
        if errors:
            raise serializers.ValidationError(errors)
        validated.update(values)
        if validated.get("phone") and not validated.get("whatsapp") and "whatsapp" not in data:
            validated["whatsapp"] = validated["phone"]
        return validated

    def validate(self, attrs):
        if self.instance is None and not any(attrs.get(key) for key in ("external_id", "email", "phone")):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give at least one of external_id, email or phone to identify the contact."]}
            )
        return attrs


def _conflict(exc: IntegrityError):
    for field in ("email", "phone", "external_id"):
        if f"contact_unique_{field}" in str(exc):
            return ApiError(
                ErrorCode.CONFLICT,
                f"{field}: another contact of this brand already has this value.",
                status.HTTP_409_CONFLICT,
                fields={field: ["Another contact of this brand already has this value."]},
            )
    return ApiError(ErrorCode.CONFLICT, "This contact conflicts with another one.", status.HTTP_409_CONFLICT)


class ContactFilter(filters.FilterSet):
    list = filters.NumberFilter(field_name="memberships__contact_list_id")
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Contact
        fields = ["brand", "email", "phone", "external_id", "country", "locale", "telegram_chat_id"]


class ConsentChangeSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    source = serializers.CharField(max_length=150, default="api")
    double_opt_in = serializers.BooleanField(
        default=False, help_text="Email only: record 'pending' and return the confirmation link's token."
    )


class UnsubscribeSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices, required=False, help_text="Omit for every channel.")
    source = serializers.CharField(max_length=150, default="api")


class BulkSerializer(serializers.Serializer):
    brand = BrandField()
    items = serializers.ListField(child=serializers.JSONField(), max_length=MAX_ITEMS, allow_empty=False)


class ContactViewSet(BrandScopedViewSetMixin, viewsets.ModelViewSet):
    """Contacts of the caller's brands. ``POST bulk/`` upserts up to 10,000 at once."""

    queryset = Contact.objects.select_related("brand").prefetch_related("consents")
    serializer_class = ContactSerializer
    filterset_class = ContactFilter
    ordering_fields = ["created_at", "updated_at", "email"]
    action_permissions = {"bulk": "add", "consent": "change", "unsubscribe": "change", "erase": "delete"}

    def perform_create(self, serializer):
        self.check_create_allowed(serializer.validated_data.get("brand"))
        try:
            with transaction.atomic():
                serializer.save()
        except IntegrityError as exc:
            raise _conflict(exc) from None

    def perform_update(self, serializer):
        if "brand" in serializer.validated_data and serializer.validated_data["brand"] != serializer.instance.brand:
            raise serializers.ValidationError({"brand": ["A contact cannot move to another brand."]})
        try:
            with transaction.atomic():
                serializer.save()
        except IntegrityError as exc:
            raise _conflict(exc) from None

    @extend_schema(request=BulkSerializer)
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        """Upsert contacts by external_id, email or phone. Each item answers on its own."""
        serializer = BulkSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        brand = serializer.validated_data["brand"]
        self.check_create_allowed(brand)
        results = bulk_upsert(brand, serializer.validated_data["items"], source="api", actor=actor_of(request))
        counts = {name: sum(r.status == name for r in results) for name in ("created", "updated", "unchanged", "error")}
        body = {**counts, "results": [r.__dict__ for r in results]}
        return Response(body, status=status.HTTP_207_MULTI_STATUS if counts["error"] else status.HTTP_200_OK)

    @extend_schema(request=ConsentChangeSerializer)
    @action(detail=True, methods=["post"])
    def consent(self, request, pk=None):
        contact = self.get_object()
        serializer = ConsentChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not contact.address_for(data["channel"]) and data["status"] != ConsentStatus.UNSUBSCRIBED:
            raise serializers.ValidationError({"channel": [f"The contact has no {data['channel']} address."]})
        if data["double_opt_in"]:
            if data["channel"] != Channel.EMAIL:
                raise serializers.ValidationError({"double_opt_in": ["Double opt-in is for email."]})
            token = services.email_request_confirmation(contact, data["source"], actor_of(request))
            return Response({"status": ConsentStatus.PENDING, "confirmation_token": token})
        services.consent_set(contact, data["channel"], data["status"], data["source"], actor_of(request))
        return Response({"channel": data["channel"], "status": data["status"]})

    @extend_schema(request=UnsubscribeSerializer)
    @action(detail=True, methods=["post"])
    def unsubscribe(self, request, pk=None):
        contact = self.get_object()
        serializer = UnsubscribeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channels = [serializer.validated_data["channel"]] if "channel" in serializer.validated_data else Channel.values
        for channel in channels:
            services.unsubscribe(contact, channel, serializer.validated_data["source"], actor_of(request))
        return Response({"unsubscribed": channels})

    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """Everything held about this contact (GDPR access / portability)."""
        return Response(services.contact_export(self.get_object()))

    @action(detail=True, methods=["post"])
    def erase(self, request, pk=None):
        """Erase the contact's personal data; its addresses stay suppressed as 'erased'."""
        contact = services.contact_erase(self.get_object(), actor=actor_of(request))
        return Response({"id": contact.pk, "erased_at": contact.erased_at})


class UniqueNameCreateMixin:
    """Creating a second object of a brand with the same name answers 409 naming the field."""

    unique_name_of = "object"

    def perform_create(self, serializer):
        self.check_create_allowed(serializer.validated_data.get("brand"))
        try:
            with transaction.atomic():
                serializer.save()
        except IntegrityError:
            raise ApiError(
                ErrorCode.CONFLICT, f"name: a {self.unique_name_of} with this name exists.", status.HTTP_409_CONFLICT
            ) from None


class ContactListSerializer(serializers.ModelSerializer):
    brand = BrandField()
    size = serializers.SerializerMethodField()

    class Meta:
        model = ContactList
        fields = ["id", "brand", "name", "description", "size", "created_at"]
        read_only_fields = ["created_at"]

    def get_size(self, obj) -> int:
        return obj.memberships.count()


class MembersSerializer(serializers.Serializer):
    contact_ids = serializers.ListField(child=serializers.IntegerField(), max_length=MAX_ITEMS, allow_empty=False)


class ContactListViewSet(UniqueNameCreateMixin, BrandScopedViewSetMixin, viewsets.ModelViewSet):
    """Static lists. ``members/`` lists (GET), adds (POST) or removes (DELETE) contacts."""

    queryset = ContactList.objects.all()
    serializer_class = ContactListSerializer
    filterset_fields = ["brand", "name"]
    action_permissions = {"members": "change"}

    unique_name_of = "list"

    @extend_schema(request=MembersSerializer, responses=ContactSerializer(many=True))
    @action(detail=True, methods=["get", "post", "delete"])
    def members(self, request, pk=None):
        contact_list = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(Contact.objects.filter(memberships__contact_list=contact_list).order_by("pk"))
            return self.get_paginated_response(ContactSerializer(page, many=True, context={"request": request}).data)
        serializer = MembersSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ids = serializer.validated_data["contact_ids"]
        known = set(Contact.objects.filter(brand_id=contact_list.brand_id, pk__in=ids).values_list("pk", flat=True))
        missing = [i for i in ids if i not in known]
        if missing:
            raise serializers.ValidationError({"contact_ids": [f"No contact with id {missing[0]} in this brand."]})
        if request.method == "POST":
            return Response({"added": services.list_add(contact_list, ids)})
        return Response({"removed": services.list_remove(contact_list, ids)})


def _validated_rules(rules):
    try:
        compile_rules(rules)
    except RuleError as exc:
        raise ApiError(ErrorCode.INVALID, str(exc), fields={f"rules.{exc.path}".rstrip("."): [exc.message]}) from None
    return rules


class SegmentSerializer(serializers.ModelSerializer):
    brand = BrandField()

    class Meta:
        model = Segment
        fields = ["id", "brand", "name", "description", "rules", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate_rules(self, rules):
        try:
            compile_rules(rules)
        except RuleError as exc:
            raise serializers.ValidationError({exc.path: [exc.message]}) from None
        return rules


class RulesSerializer(serializers.Serializer):
    brand = BrandField()
    rules = serializers.JSONField()


class SegmentViewSet(UniqueNameCreateMixin, BrandScopedViewSetMixin, viewsets.ModelViewSet):
    """Saved rule trees. ``estimate/`` counts and ``preview/`` lists the first 50 members."""

    queryset = Segment.objects.all()
    serializer_class = SegmentSerializer
    filterset_fields = ["brand", "name"]

    unique_name_of = "segment"

    @action(detail=True, methods=["get"])
    def estimate(self, request, pk=None):
        return Response({"count": services.segment_members(self.get_object()).count()})

    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        members = services.segment_members(self.get_object()).order_by("pk")[:PREVIEW_SIZE]
        return Response({"results": ContactSerializer(members, many=True, context={"request": request}).data})

    @extend_schema(request=RulesSerializer)
    @action(detail=False, methods=["post"], url_path="estimate", url_name="estimate-rules")
    def estimate_rules(self, request):
        """Count the contacts an unsaved rule tree selects (for rule builders)."""
        serializer = RulesSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        rules = _validated_rules(serializer.validated_data["rules"])
        segment = Segment(brand=serializer.validated_data["brand"], rules=rules)
        return Response({"count": services.segment_members(segment).count()})


class SuppressionSerializer(serializers.ModelSerializer):
    brand = BrandField()

    class Meta:
        model = Suppression
        fields = ["id", "brand", "channel", "address", "reason", "source", "created_at"]
        read_only_fields = ["created_at"]
        validators = []


class SuppressionViewSet(
    BrandScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Suppression.objects.all()
    serializer_class = SuppressionSerializer
    filterset_fields = ["brand", "channel", "address", "reason"]

    def perform_create(self, serializer):
        data = serializer.validated_data
        self.check_create_allowed(data["brand"])
        serializer.instance = services.suppression_add(
            data["brand"], data["channel"], data["address"], data["reason"], data.get("source") or "api"
        )

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from ..models import ApiKey, Brand
from ..services import api_key_create, api_key_revoke
from .fields import BrandField
from .mixins import BrandScopedViewSetMixin


class BrandSerializer(serializers.ModelSerializer):
    class Meta:
        model = Brand
        fields = [
            "id", "name", "slug", "sender_name", "default_locale", "default_region", "time_zone",
            "quiet_hours_start", "quiet_hours_end", "email_header_html", "email_footer_html", "logo_url",
            "primary_colour", "secondary_colour", "legal_address", "sms_opt_out_suffix", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "slug", "created_at", "updated_at"]

    def validate(self, attrs):
        start = attrs.get("quiet_hours_start", getattr(self.instance, "quiet_hours_start", None))
        end = attrs.get("quiet_hours_end", getattr(self.instance, "quiet_hours_end", None))
        if (start is None) != (end is None):
            raise serializers.ValidationError({"quiet_hours_end": ["Set both ends of the quiet hours, or neither."]})
        return attrs


class BrandViewSet(
    BrandScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The brands the caller acts for, and their guidelines (Admins may change them)."""

    queryset = Brand.objects.all()
    serializer_class = BrandSerializer
    brand_field = "id"
    filterset_fields = ["slug"]
    ordering_fields = ["name", "created_at"]


class ApiKeySerializer(serializers.ModelSerializer):
    brand = BrandField()
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "brand", "name", "role", "prefix", "created_at", "last_used_at", "revoked_at", "is_active"]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The secret. Shown once, never again.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class ApiKeyViewSet(
    BrandScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """A brand's API keys (Admins only). Creating returns the secret once; deleting revokes."""

    queryset = ApiKey.objects.select_related("brand")
    serializer_class = ApiKeySerializer
    filterset_fields = ["brand", "role"]

    @extend_schema(responses={201: ApiKeyCreatedSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        data = ApiKeyCreatedSerializer(serializer.instance).data
        data["key"] = serializer.instance.plaintext
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_create(self, serializer):
        data = serializer.validated_data
        self.check_create_allowed(data["brand"])
        user = self.request.user if self.request.user.is_authenticated else None
        key, plaintext = api_key_create(brand=data["brand"], name=data["name"], role=data["role"], created_by=user)
        key.plaintext = plaintext
        serializer.instance = key

    def perform_destroy(self, instance):
        api_key_revoke(key=instance)

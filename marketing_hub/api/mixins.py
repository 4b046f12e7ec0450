from rest_framework import serializers

from ..tenancy import brand_ids_for_request, may


class BrandScopedViewSetMixin:
    """Every query limited to the caller's brands; creates checked against the role in that brand.

    An object of another brand is indistinguishable from one that does not exist (404).
    """

    brand_field = "brand"

    def get_queryset(self):
        queryset = super().get_queryset()
        ids = brand_ids_for_request(self.request)
        if ids is None:
            return queryset
        return queryset.filter(**{f"{self.brand_field}__in": ids})

    def check_create_allowed(self, brand) -> None:
        meta = self.get_queryset().model._meta
        if brand is not None and not may(self.request, brand.pk, meta.app_label, meta.model_name, "add"):
            raise serializers.ValidationError({"brand": ["Your role in this brand may not create this."]})

    def perform_create(self, serializer):
        self.check_create_allowed(serializer.validated_data.get("brand"))
        serializer.save()

"""Serializer fields that only accept objects of the caller's brands."""

from rest_framework import serializers

from ..models import ApiKey, Brand
from ..tenancy import brand_ids_for_request


def _scope(queryset, request, brand_lookup: str):
    if request is None:
        return queryset.none()
    ids = brand_ids_for_request(request)
    if ids is None:
        return queryset
    return queryset.filter(**{brand_lookup: ids})


class CallerBrandDefault:
    """The API key's brand, or the user's only brand; otherwise the client must say which."""

    requires_context = True

    def __call__(self, serializer_field):
        request = serializer_field.context.get("request")
        if request is not None and isinstance(request.auth, ApiKey):
            return request.auth.brand
        ids = brand_ids_for_request(request) if request is not None else []
        if ids and len(ids) == 1:
            return Brand.objects.get(pk=ids[0])
        raise serializers.ValidationError("Say which brand: you act for more than one.")


class BrandField(serializers.PrimaryKeyRelatedField):
    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Brand.objects.all())
        kwargs.setdefault("default", CallerBrandDefault())
        super().__init__(**kwargs)

    def get_queryset(self):
        return _scope(super().get_queryset(), self.context.get("request"), "id__in")


class ScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key to another brand-scoped model: ids of other brands read as "does not exist"."""

    def __init__(self, brand_field: str = "brand", **kwargs):
        self.brand_field = brand_field
        super().__init__(**kwargs)

    def get_queryset(self):
        return _scope(super().get_queryset(), self.context.get("request"), f"{self.brand_field}__in")

from rest_framework import permissions

from ..models import ApiKey
from ..tenancy import may, may_anywhere

_ACTION_BY_METHOD = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def _model_of(view):
    queryset = getattr(view, "queryset", None)
    return queryset.model if queryset is not None else None


def _brand_id_of(view, obj) -> int:
    *path, last = getattr(view, "brand_field", "brand").split("__")
    for part in path:
        obj = getattr(obj, part)
    return getattr(obj, "id" if last == "id" else f"{last}_id")


class BrandRolePermission(permissions.BasePermission):
    """The caller's role in the object's brand must grant the action on the view's model.

    Reads need ``view``; POST ``add``; PUT/PATCH ``change``; DELETE ``delete``. A view may name
    the permission an extra action needs in ``action_permissions = {"launch": "change"}``.
    """

    def _needed(self, request, view) -> str:
        custom = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if custom:
            return custom
        return "view" if request.method in permissions.SAFE_METHODS else _ACTION_BY_METHOD.get(request.method, "view")

    def has_permission(self, request, view) -> bool:
        if not (isinstance(request.auth, ApiKey) or (request.user and request.user.is_authenticated)):
            return False
        model = _model_of(view)
        if model is None:
            return True
        meta = model._meta
        return may_anywhere(request, meta.app_label, meta.model_name, self._needed(request, view))

    def has_object_permission(self, request, view, obj) -> bool:
        meta = obj._meta
        return may(request, _brand_id_of(view, obj), meta.app_label, meta.model_name, self._needed(request, view))

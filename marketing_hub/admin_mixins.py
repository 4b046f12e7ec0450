"""The admin mixin every brand-owned ModelAdmin uses.

Querysets, foreign-key and many-to-many choices, autocomplete and actions are limited to the
user's brands; the user's role in an object's brand decides what they may do with it. An object
of another brand answers 404, exactly like one that does not exist. Superusers see everything.
"""

from django.contrib import admin
from django.http import Http404

from .models import Brand
from .roles import role_grants
from .tenancy import brand_roles_for_user, brands_for_user


def _is_superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


class BrandScopedAdminMixin:
    #: Lookup path from the model to its Brand ("brand", "contact__brand", or "id" on Brand itself).
    brand_field = "brand"

    # -- scoping -------------------------------------------------------------------------------
    def scope_queryset(self, request, queryset, brand_field: str, action: str = "view"):
        """``queryset`` limited to the brands where the user's role grants ``action`` on it."""
        if _is_superuser(request):
            return queryset
        opts = queryset.model._meta
        brand_ids = [
            brand_id
            for brand_id, role in brand_roles_for_user(request.user).items()
            if role_grants(role, opts.app_label, opts.model_name, action)
        ]
        return queryset.filter(**{f"{brand_field}__in": brand_ids})

    def get_queryset(self, request):
        return self.scope_queryset(request, super().get_queryset(request), self.brand_field)

    def allowed(self, request, queryset, action: str = "change"):
        """For admin actions: the selected objects the user may ``action``, never more."""
        return self.scope_queryset(request, queryset, self.brand_field, action)

    def _limit_related(self, request, db_field, kwargs):
        related = db_field.related_model
        if related is Brand:
            # Offer only the brands where the user's role may create or edit this kind of object.
            opts = self.model._meta
            writable = [
                brand_id
                for brand_id, role in brand_roles_for_user(request.user).items()
                if role_grants(role, opts.app_label, opts.model_name, "add")
                or role_grants(role, opts.app_label, opts.model_name, "change")
            ]
            base = brands_for_user(request.user)
            kwargs["queryset"] = base if _is_superuser(request) else base.filter(id__in=writable)
        elif any(field.name == "brand" for field in related._meta.get_fields()):
            base = kwargs.get("queryset", related._default_manager.all())
            kwargs["queryset"] = self.scope_queryset(request, base, "brand")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        self._limit_related(request, db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        self._limit_related(request, db_field, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the index with "doesn't exist"; an id of another brand must not
        # even be told apart from a missing one, and a plain 404 says so.
        raise Http404(f"No {opts.verbose_name} with id {object_id!r}.")

    # -- per-brand roles -------------------------------------------------------------------------
    def _brand_id(self, obj) -> int:
        *path, last = self.brand_field.split("__")
        for part in path:
            obj = getattr(obj, part)
        return getattr(obj, "id" if last == "id" else f"{last}_id")

    def _role_allows(self, request, action: str, obj=None) -> bool:
        if _is_superuser(request):
            return True
        opts = self.model._meta
        roles = brand_roles_for_user(request.user)
        if obj is None:
            return any(role_grants(role, opts.app_label, opts.model_name, action) for role in roles.values())
        role = roles.get(self._brand_id(obj))
        return role is not None and role_grants(role, opts.app_label, opts.model_name, action)

    def has_view_permission(self, request, obj=None):
        return self._role_allows(request, "view", obj) or self._role_allows(request, "change", obj)

    def has_add_permission(self, request, *args):
        return self._role_allows(request, "add")

    def has_change_permission(self, request, obj=None):
        return self._role_allows(request, "change", obj)

    def has_delete_permission(self, request, obj=None):
        return self._role_allows(request, "delete", obj)

    def has_module_permission(self, request):
        return self._role_allows(request, "view")

    def has_export_permission(self, request):
        return self._role_allows(request, "export_data") or _is_superuser(request)


class BrandScopedModelAdmin(BrandScopedAdminMixin, admin.ModelAdmin):
    pass

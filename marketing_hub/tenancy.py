"""Which brands a user or API key may act for, and in which role.

Every admin and API view asks these functions; nothing else decides tenancy.
"""

from django.contrib.auth.models import Group

from .models import ApiKey, Brand, Membership
from .roles import Role, group_name, role_grants

_CACHE_ATTR = "_hub_brand_roles"


def brand_roles_for_user(user) -> dict[int, str]:
    """``{brand_id: role}`` for an authenticated user; cached on the user object per request."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return {}
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        cached = dict(Membership.objects.filter(user=user).values_list("brand_id", "role"))
        setattr(user, _CACHE_ATTR, cached)
    return cached


def brands_for_user(user):
    """The brands a user may see: all of them for a superuser, else their memberships."""
    if getattr(user, "is_superuser", False) and user.is_active:
        return Brand.objects.all()
    return Brand.objects.filter(id__in=list(brand_roles_for_user(user)))


def brand_ids_for_request(request) -> list[int] | None:
    """Brand ids the caller may see, or ``None`` for "every brand" (superuser, no API key)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return [auth.brand_id]
    user = request.user
    if getattr(user, "is_superuser", False) and user.is_active:
        return None
    return list(brand_roles_for_user(user))


def role_for(request, brand_id: int) -> str | None:
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return auth.role if auth.brand_id == brand_id else None
    user = request.user
    if getattr(user, "is_superuser", False) and user.is_active:
        return Role.ADMIN
    return brand_roles_for_user(user).get(brand_id)


def may(request, brand_id: int, app_label: str, model: str, action: str) -> bool:
    if getattr(request.user, "is_superuser", False) and not isinstance(getattr(request, "auth", None), ApiKey):
        return request.user.is_active
    role = role_for(request, brand_id)
    return role is not None and role_grants(role, app_label, model, action)


def may_anywhere(request, app_label: str, model: str, action: str) -> bool:
    """Whether the caller may do ``action`` in at least one of its brands."""
    if getattr(request.user, "is_superuser", False) and not isinstance(getattr(request, "auth", None), ApiKey):
        return request.user.is_active
    auth = getattr(request, "auth", None)
    roles = [auth.role] if isinstance(auth, ApiKey) else brand_roles_for_user(request.user).values()
    return any(role_grants(role, app_label, model, action) for role in roles)


def user_sync_groups(*, user) -> None:
    """Put the user in the groups of the roles they hold somewhere, and no others of ours."""
    role_groups = {group_name(role) for role in Role}
    held = {group_name(role) for role in Membership.objects.filter(user=user).values_list("role", flat=True)}
    current = set(user.groups.filter(name__in=role_groups).values_list("name", flat=True))
    if held - current:
        user.groups.add(*Group.objects.filter(name__in=held - current))
    if current - held:
        user.groups.remove(*Group.objects.filter(name__in=current - held))
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)

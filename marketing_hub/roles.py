"""Roles within a brand, backed by Django groups of the same name.

A membership says which brand a user acts for and in which role; the role's group says what
that role may do. The groups are created by a migration; their permissions are (re)synced after
every migrate, so models added by later apps are covered without a hand-written migration each.
"""

from django.db import models

HUB_APPS = ("marketing_hub", "audiences", "channels", "campaigns", "analytics")
# Marketers edit audiences and campaigns; they read sender accounts and analytics.
MARKETER_EDITS = ("audiences", "campaigns")
# Only brand Admins touch who may act for the brand and how (memberships, API keys, accounts).
ADMIN_ONLY_MODELS = {("marketing_hub", "membership"), ("marketing_hub", "apikey")}


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MARKETER = "marketer", "Marketer"
    ANALYST = "analyst", "Analyst"
    VIEWER = "viewer", "Viewer"


EXPORT_PERMISSION = "marketing_hub.export_data"


def role_grants(role: str, app_label: str, model: str, action: str) -> bool:
    """Whether ``role`` may do ``action`` (view/add/change/delete, or a custom codename)."""
    if app_label not in HUB_APPS:
        return False
    if role == Role.ADMIN:
        return not (app_label == "marketing_hub" and model == "brand" and action in ("add", "delete"))
    if (app_label, model) in ADMIN_ONLY_MODELS:
        return False
    if action == "view":
        return True
    if action == "export_data":
        return role in (Role.MARKETER, Role.ANALYST)
    if role == Role.MARKETER:
        return app_label in MARKETER_EDITS
    return False


def group_name(role: str) -> str:
    return Role(role).label


def sync_role_permissions(**_kwargs) -> None:
    """Give each role's group exactly the permissions ``role_grants`` allows. Idempotent."""
    from django.contrib.auth.models import Group, Permission

    permissions = list(Permission.objects.filter(content_type__app_label__in=HUB_APPS).select_related("content_type"))
    for role in Role:
        group, _ = Group.objects.get_or_create(name=group_name(role))
        wanted = [
            perm
            for perm in permissions
            if role_grants(role, perm.content_type.app_label, perm.content_type.model, _action(perm.codename))
        ]
        group.permissions.set(wanted)


def _action(codename: str) -> str:
    for action in ("view", "add", "change", "delete"):
        if codename.startswith(action + "_"):
            return action
    return codename

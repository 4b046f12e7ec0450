from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class MarketingHubConfig(AppConfig):
    name = "marketing_hub"
    verbose_name = "Brands and access"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .models import Membership
        from .roles import sync_role_permissions
        from .tenancy import user_sync_groups

        post_migrate.connect(sync_role_permissions, dispatch_uid="hub-sync-role-permissions")

        def _resync(sender, instance, **kwargs):
            user_sync_groups(user=instance.user)

        post_save.connect(_resync, sender=Membership, weak=False, dispatch_uid="hub-membership-saved")
        post_delete.connect(_resync, sender=Membership, weak=False, dispatch_uid="hub-membership-deleted")

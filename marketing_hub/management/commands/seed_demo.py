from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from marketing_hub.models import Brand
from marketing_hub.roles import Role
from marketing_hub.services import membership_set

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"


class Command(BaseCommand):
    help = "Create the demo superuser and demo brand for the embedded default (idempotent)."

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError("seed_demo creates a known password: it does not run with DJANGO_ENV=production.")
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        brand, _ = Brand.objects.get_or_create(
            slug="demo",
            defaults={
                "name": "Demo Brand",
                "sender_name": "Demo Brand",
                "legal_address": "1 Demo Street, 10115 Berlin, Germany",
                "time_zone": "Europe/Berlin",
                "default_region": "DE",
                "email_footer_html": "<p>Demo Brand · 1 Demo Street, 10115 Berlin</p>",
            },
        )
        membership_set(user=user, brand=brand, role=Role.ADMIN)
        from campaigns.demo import seed

        seed(brand)  # sandbox accounts, 500 contacts with consent, a list, a segment, a template, a draft campaign
        self.stdout.write(f"demo: brand '{brand.slug}', login {DEMO_USERNAME} / {DEMO_PASSWORD}")

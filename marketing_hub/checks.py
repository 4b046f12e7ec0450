"""Refuse to run in production with unsafe settings: a system check that names the setting.

``manage.py`` commands run it through Django's check framework; gunicorn (wsgi.py) and the Celery
processes (celery.py) call ``refuse_unsafe_production`` themselves, as they skip system checks.
"""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .settings import DEFAULT_SECRET_KEY


@checks.register(checks.Tags.security)
def production_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.PRODUCTION:
        return []
    errors = []
    if settings.DEBUG:
        errors.append(checks.Error("DEBUG is on in production.", hint="Unset DEBUG or set DEBUG=0.", id="hub.E001"))
    if settings.SECRET_KEY == DEFAULT_SECRET_KEY or len(settings.SECRET_KEY) < 32:
        errors.append(
            checks.Error(
                "SECRET_KEY is the embedded default or shorter than 32 characters.",
                hint="Set SECRET_KEY to a long random value.",
                id="hub.E002",
            )
        )
    if not settings.ALLOWED_HOSTS:
        errors.append(checks.Error("ALLOWED_HOSTS is empty.", hint="Set ALLOWED_HOSTS=hub.example.com", id="hub.E003"))
    if not settings.FIELD_ENCRYPTION_KEYS:
        errors.append(
            checks.Error(
                "FIELD_ENCRYPTION_KEYS is not set: provider credentials cannot be encrypted at rest.",
                hint="Set FIELD_ENCRYPTION_KEYS to one or more Fernet keys, newest first.",
                id="hub.E004",
            )
        )
    else:
        for index, key in enumerate(settings.FIELD_ENCRYPTION_KEYS):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                errors.append(
                    checks.Error(
                        f"FIELD_ENCRYPTION_KEYS entry {index + 1} is not a valid Fernet key.",
                        hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                        "print(Fernet.generate_key().decode())'",
                        id="hub.E005",
                    )
                )
    return errors


def refuse_unsafe_production() -> None:
    errors = production_settings()
    if errors:
        lines = "\n".join(f"  {error.id}: {error.msg} {error.hint}" for error in errors)
        raise ImproperlyConfigured(f"Refusing to start in production:\n{lines}")

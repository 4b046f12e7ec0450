from django.apps import AppConfig


class AudiencesConfig(AppConfig):
    name = "audiences"

    def ready(self):
        from . import receivers  # noqa: F401 - connects the receivers

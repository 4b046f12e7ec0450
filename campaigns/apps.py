from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self):
        from . import receivers

        receivers.register_engagement_conditions()  # segments can ask "opened anything in 90 days?"

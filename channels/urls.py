"""Inbound provider webhooks (paths are part of the contract with the provider sandbox and the adapters)."""

from django.urls import path

from . import webhooks

urlpatterns = [
    path("webhooks/twilio/<int:account_id>/status/", webhooks.twilio_status, name="webhook-twilio-status"),
    path("webhooks/twilio/<int:account_id>/inbound/", webhooks.twilio_inbound, name="webhook-twilio-inbound"),
    path("webhooks/sendgrid/<int:account_id>/events/", webhooks.sendgrid_events, name="webhook-sendgrid-events"),
    path("webhooks/telegram/<int:account_id>/", webhooks.telegram_update, name="webhook-telegram"),
]

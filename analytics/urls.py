"""This app's routes (API under api/, webhooks, tracking), included by marketing_hub/urls.py."""

urlpatterns: list = []

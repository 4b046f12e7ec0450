"""This app's routes (API under api/, the unsubscribe and preferences links, tracked links and the open
pixel), included by marketing_hub/urls.py."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, tracking, views

router = DefaultRouter()
router.register("campaigns", api.CampaignViewSet, basename="campaign")
router.register("messages", api.MessageViewSet, basename="message")

urlpatterns = [
    path("api/", include(router.urls)),
    path("u/<str:token>/", views.unsubscribe_view, name="campaigns-unsubscribe"),
    path("p/<str:token>/", views.preferences_view, name="campaigns-preferences"),
    path("c/<str:token>/", tracking.click_view, name="campaigns-click"),
    path("o/<str:token>.gif", tracking.open_view, name="campaigns-open"),
]

"""This app's routes (API under api/, the public confirmation link), included by marketing_hub/urls.py."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, views

router = DefaultRouter()
router.register("contacts", api.ContactViewSet, basename="contact")
router.register("lists", api.ContactListViewSet, basename="contact-list")
router.register("segments", api.SegmentViewSet, basename="segment")
router.register("suppressions", api.SuppressionViewSet, basename="suppression")

urlpatterns = [
    path("api/", include(router.urls)),
    path("a/confirm/<str:token>/", views.confirm_email, name="audiences-confirm-email"),
]

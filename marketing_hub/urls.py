from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from .health import healthz

admin.site.site_header = "Marketing Hub"
admin.site.site_title = "Marketing Hub"
admin.site.index_title = "Campaigns, audiences and channels"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[AllowAny]),
        name="api-docs",
    ),
    path("api/", include("marketing_hub.api.urls")),
    # Each app declares its own full paths (api/..., webhooks/..., t/...).
    path("", include("audiences.urls")),
    path("", include("channels.urls")),
    path("", include("campaigns.urls")),
    path("", include("analytics.urls")),
]

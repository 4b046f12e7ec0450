from rest_framework.routers import DefaultRouter

from .views import ApiKeyViewSet, BrandViewSet

router = DefaultRouter()
router.register("brands", BrandViewSet, basename="brand")
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = router.urls

import factory
from django.contrib.auth import get_user_model

from marketing_hub.models import Brand
from marketing_hub.roles import Role
from marketing_hub.services import api_key_create, membership_set


class BrandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Brand
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Brand {n}")
    slug = factory.Sequence(lambda n: f"brand-{n}")
    sender_name = factory.SelfAttribute("name")
    legal_address = "1 Test Street, Testville"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    is_staff = True
    password = factory.django.Password("pw-for-tests-1")


def member(brand: Brand, role: str = Role.MARKETER, **kwargs):
    """A staff user holding ``role`` in ``brand``."""
    User = get_user_model()
    username = kwargs.get("username")
    user = User.objects.filter(username=username).first() if username else None
    if user is None:
        user = UserFactory(**kwargs)
    membership_set(user=user, brand=brand, role=role)
    return user


def api_key(brand: Brand, role: str = Role.MARKETER) -> str:
    return api_key_create(brand=brand, name=f"{role} key", role=role)[1]

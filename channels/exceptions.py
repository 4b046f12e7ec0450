"""What can go wrong between the hub and a provider. Catch only what you can handle."""

from django.core.exceptions import ImproperlyConfigured


class ProviderError(Exception):
    """A provider refused or failed a request: carries the provider, HTTP status and its own code."""

    def __init__(self, message: str, *, provider: str, status: int | None = None, code: str | None = None,
                 response: str | None = None):  # fmt: skip
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.response = response


class ProviderTransientError(ProviderError):
    """Worth retrying later: network failure, time-out, 429 (with ``retry_after`` seconds), 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ProviderPermanentError(ProviderError):
    """Never retried: invalid address, unsubscribed at the provider, blocked bot, other 4xx."""


class ProviderConfigurationError(ImproperlyConfigured):
    """The account is missing a credential or setting the provider needs."""


class UnsupportedFeature(ProviderError):
    """The provider cannot do what was asked (e.g. a button on SMS)."""

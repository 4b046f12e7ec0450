"""Provider adapters by name. ``get_adapter(config)`` picks the class for ``config.provider``."""

from .base import BaseAdapter, OutboundMessage, ProviderConfig, SendResult

ADAPTERS: dict[str, type[BaseAdapter]] = {}


def register(cls: type[BaseAdapter]) -> type[BaseAdapter]:
    ADAPTERS[cls.provider] = cls
    return cls


_CACHE: dict = {}


def get_adapter(config: ProviderConfig, cached: bool = False) -> BaseAdapter:
    """An adapter for ``config``. ``cached=True`` reuses one per identical config (per process), so
    HTTP sessions and their keep-alive connections outlive a single batch."""
    if cached:
        key = repr(config)
        adapter = _CACHE.get(key)
        if adapter is None:
            if len(_CACHE) > 256:
                _CACHE.clear()
            adapter = _CACHE[key] = get_adapter(config)
        return adapter
    try:
        return ADAPTERS[config.provider](config)
    except KeyError:
        raise LookupError(
            f"no adapter for provider {config.provider!r}; known: {', '.join(sorted(ADAPTERS))}"
        ) from None


__all__ = ["ADAPTERS", "BaseAdapter", "OutboundMessage", "ProviderConfig", "SendResult", "get_adapter", "register"]

# The provider modules register themselves (imported last: they import ``register`` from here).
from . import sendgrid, smtp, telegram, twilio_sms, twilio_whatsapp, webhook  # noqa: E402, F401

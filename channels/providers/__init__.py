"""Provider adapters by name. ``get_adapter(config)`` picks the class for ``config.provider``."""

from .base import BaseAdapter, OutboundMessage, ProviderConfig, SendResult

ADAPTERS: dict[str, type[BaseAdapter]] = {}


def register(cls: type[BaseAdapter]) -> type[BaseAdapter]:
    ADAPTERS[cls.provider] = cls
    return cls


def get_adapter(config: ProviderConfig) -> BaseAdapter:
    try:
        return ADAPTERS[config.provider](config)
    except KeyError:
        raise LookupError(
            f"no adapter for provider {config.provider!r}; known: {', '.join(sorted(ADAPTERS))}"
        ) from None


__all__ = ["ADAPTERS", "BaseAdapter", "OutboundMessage", "ProviderConfig", "SendResult", "get_adapter", "register"]

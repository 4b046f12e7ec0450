"""Render a template for one contact on one channel: content, translations and brand wrapping."""

from dataclasses import dataclass, field

from .models import TEMPLATE_FIELDS, MessageTemplate, TemplateContent, TemplatePurpose
from .templating import (
    TRACK_FUNCTION,
    brand_context,
    contact_context,
    render,
    text_part,
    with_sms_opt_out,
    wrap_email_html,
    wrap_email_text,
)
from .tracking import Tracker, with_open_pixel


class NoContentError(LookupError):
    """The template has no content for this channel in the contact's locale nor the brand's default."""


@dataclass(frozen=True)
class RenderedMessage:
    channel: str
    locale: str
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    content_sid: str = ""
    content_variables: dict = field(default_factory=dict)
    button: dict | None = None


def _locale_chain(locale: str, default: str) -> list[str]:
    chain = []
    for candidate in (locale, locale.split("-")[0] if locale else "", default):
        if candidate and candidate not in chain:
            chain.append(candidate)
    return chain


def _contents_by_locale(template: MessageTemplate) -> dict[str, TemplateContent]:
    """The template's contents by locale; with prefetched contents (the sender's batches) worked out
    once per prefetch instead of once per recipient."""
    prefetched = getattr(template, "_prefetched_objects_cache", {}).get("contents")
    if prefetched is None:
        return {content.locale: content for content in template.contents.all()}
    cached = getattr(template, "_contents_by_locale", None)
    if cached is None or cached[0] is not prefetched:  # a new prefetch (refresh) replaces the list
        cached = (prefetched, {content.locale: content for content in prefetched})
        template._contents_by_locale = cached
    return cached[1]


def content_for(template: MessageTemplate, locale: str) -> TemplateContent:
    """The content in ``locale``, its language, or the brand's default locale, in that order."""
    contents = _contents_by_locale(template)
    for candidate in _locale_chain(locale or "", template.brand.default_locale):
        if candidate in contents:
            return contents[candidate]
    if contents:
        return next(iter(contents.values()))
    raise NoContentError(f"template {template.name!r} has no content")


def render_message(
    *,
    template: MessageTemplate,
    channel: str,
    contact,
    links: dict[str, str],
    locale: str | None = None,
    message_id: int | None = None,
) -> RenderedMessage:
    """Everything a provider adapter needs for ``contact`` on ``channel``, brand rules applied.

    With ``message_id`` (a message being sent) ``track()`` gives the hub's tracked links and a
    marketing email gets the open pixel; without (a preview, a test send) links stay their targets."""
    brand = template.brand
    context = {"contact": contact_context(contact), "brand": brand_context(brand), **links}
    if message_id is not None:
        context[TRACK_FUNCTION] = Tracker(message_id)
    wanted_locale = locale or context["contact"]["locale"] or brand.default_locale
    content = content_for(template, wanted_locale)

    def field_value(name: str) -> str:
        return render(getattr(content, name), context, html_mode=TEMPLATE_FIELDS[name], field_name=name)

    unsubscribe_url = links.get("unsubscribe_url", "")
    marketing = template.purpose == TemplatePurpose.MARKETING
    if channel == "email":
        if not (content.email_html or content.email_text):
            raise NoContentError(f"template {template.name!r} has no email content")
        body_html = field_value("email_html")
        body_text = field_value("email_text") or text_part(content.email_html, context, body_html)
        if template.use_brand_layout:
            body_html = wrap_email_html(body_html, brand=brand, unsubscribe_url=unsubscribe_url) if body_html else ""
            body_text = wrap_email_text(body_text, brand=brand, unsubscribe_url=unsubscribe_url)
        if marketing and message_id is not None and body_html:
            body_html = with_open_pixel(body_html, message_id)
        return RenderedMessage(
            channel=channel,
            locale=content.locale,
            subject=field_value("email_subject"),
            preheader=field_value("email_preheader"),
            html=body_html,
            text=body_text,
        )
    if channel == "sms":
        if not content.sms_text:
            raise NoContentError(f"template {template.name!r} has no SMS text")
        text = field_value("sms_text")
        return RenderedMessage(
            channel=channel, locale=content.locale, text=with_sms_opt_out(text, brand=brand) if marketing else text
        )
    if channel == "whatsapp":
        if not (content.whatsapp_content_sid or content.whatsapp_text):
            raise NoContentError(f"template {template.name!r} has no WhatsApp content")
        variables = {str(key): render(str(expr), context) for key, expr in (content.whatsapp_variables or {}).items()}
        return RenderedMessage(
            channel=channel,
            locale=content.locale,
            text=field_value("whatsapp_text"),
            content_sid=content.whatsapp_content_sid,
            content_variables=variables,
        )
    if channel == "telegram":
        if not content.telegram_text:
            raise NoContentError(f"template {template.name!r} has no Telegram text")
        button = None
        if content.telegram_button_text:
            button = {"text": field_value("telegram_button_text"), "url": field_value("telegram_button_url")}
        return RenderedMessage(channel=channel, locale=content.locale, text=field_value("telegram_text"), button=button)
    raise NoContentError(f"templates do not render for channel {channel!r}")

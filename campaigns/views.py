"""Pages a contact reaches from a message: the unsubscribe link in every marketing message, including
RFC 8058 one-click (List-Unsubscribe-Post), and the preferences page (``{{ preferences_url }}``)."""

from django.core import signing
from django.http import HttpResponse
from django.utils.html import escape
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from audiences.models import ADDRESS_FIELD, Channel, ConsentStatus
from audiences.services import consent_set, email_request_confirmation, is_suppressed, unsubscribe

from .models import Message
from .sender import PREFERENCES_SALT, UNSUBSCRIBE_SALT

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""


@csrf_exempt  # mail clients POST here without a session (one-click); the signed token is the proof
def unsubscribe_view(request, token: str):
    try:
        message_id, contact_id, channel = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return HttpResponse(PAGE.format(body="<p>This unsubscribe link is not valid.</p>"), status=404)
    message = Message.objects.select_related("contact", "brand").filter(pk=message_id, contact_id=contact_id).first()
    if message is None:
        return HttpResponse(PAGE.format(body="<p>This unsubscribe link is not valid.</p>"), status=404)
    if request.method == "POST":
        unsubscribe(message.contact, channel, f"link:message {message_id}", "contact")
        body = f"<p>You will no longer receive {escape(channel)} messages from {escape(message.brand.name)}.</p>"
        return HttpResponse(PAGE.format(body=body))
    body = (
        f"<p>Stop receiving {escape(channel)} messages from {escape(message.brand.name)}?</p>"
        '<form method="post"><button type="submit">Unsubscribe</button></form>'
    )
    return HttpResponse(PAGE.format(body=body))


# -- the preferences page ----------------------------------------------------------------------------
PREFERENCES_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Your preferences</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""
STATUS_TEXT = {ConsentStatus.SUBSCRIBED: "subscribed", ConsentStatus.PENDING: "waiting for confirmation"}


def _preferences_message(token: str) -> Message | None:
    """The message a preferences token was made for, if the token is ours and its contact not erased."""
    try:
        message_id, contact_id = signing.loads(token, salt=PREFERENCES_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return (
        Message.objects.select_related("contact", "brand")
        .filter(pk=message_id, contact_id=contact_id, contact__erased_at__isnull=True)
        .first()
    )


def _channel_states(message: Message) -> list[tuple[str, str, bool]]:
    """(channel, consent status or "", blocked) for each channel the contact has an address on.

    Blocked: the address is suppressed (STOP, bounce, complaint...). Suppression wins over consent,
    and lifting it is not this page's business (START from the phone, the marketer), so such a
    channel is shown but not changed here."""
    contact = message.contact
    consents = dict(contact.consents.values_list("channel", "status"))
    return [
        (channel, consents.get(channel, ""), is_suppressed(message.brand, channel, getattr(contact, field)))
        for channel, field in ADDRESS_FIELD.items()
        if getattr(contact, field)
    ]


def _mailbox_proven(message: Message) -> bool:
    """The link came in an email to the contact's current address: following it proves the mailbox,
    as the double opt-in link would."""
    email = message.contact.email or ""
    return message.channel == Channel.EMAIL and bool(email) and message.address.lower() == email.lower()


def _subscribe(message: Message, channel: str, status: str, source: str) -> None:
    """Consent through the audiences services. Email needs a proven mailbox; otherwise it goes the
    double opt-in way (pending until the confirmation link is followed)."""
    if status == ConsentStatus.SUBSCRIBED:
        return
    if channel == Channel.EMAIL and not _mailbox_proven(message):
        if status != ConsentStatus.PENDING:
            email_request_confirmation(message.contact, source, "contact")
        return
    consent_set(message.contact, channel, ConsentStatus.SUBSCRIBED, source, "contact")


def _apply_preferences(message: Message, wanted: set[str]) -> None:
    source = f"preferences page: message {message.pk}"
    for channel, status, blocked in _channel_states(message):
        if blocked:
            continue
        if channel in wanted:
            _subscribe(message, channel, status, source)
        elif status != ConsentStatus.UNSUBSCRIBED:
            unsubscribe(message.contact, channel, source, "contact")


def _preferences_form(message: Message, notice: str = "") -> str:
    rows = []
    for channel, status, blocked in _channel_states(message):
        checked = " checked" if status in (ConsentStatus.SUBSCRIBED, ConsentStatus.PENDING) else ""
        state = "blocked, cannot be changed here" if blocked else STATUS_TEXT.get(status, "not subscribed")
        rows.append(
            f'<p><label><input type="checkbox" name="channel" value="{escape(channel)}"{checked}'
            f"{' disabled' if blocked else ''}> {escape(Channel(channel).label)}</label> ({escape(state)})</p>"
        )
    if not rows:
        rows.append("<p>We have no address of yours to send messages to.</p>")
    return (
        f"{notice}<h1>Messages from {escape(message.brand.name)}</h1>"
        '<p>Choose how you want to hear from us.</p><form method="post">'
        f'{"".join(rows)}<button type="submit">Save</button></form>'
    )


@csrf_exempt  # reached from a message without a session: the signed token in the URL is the proof
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def preferences_view(request, token: str):
    """Every channel the contact has an address on, with its consent; a POST applies the choices."""
    message = _preferences_message(token)
    if message is None:
        return HttpResponse(PREFERENCES_PAGE.format(body="<p>This link is not valid.</p>"), status=404)
    notice = ""
    if request.method == "POST":
        _apply_preferences(message, set(request.POST.getlist("channel")))
        notice = "<p><strong>Your preferences are saved.</strong></p>"
    return HttpResponse(PREFERENCES_PAGE.format(body=_preferences_form(message, notice)))

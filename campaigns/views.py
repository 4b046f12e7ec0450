"""The unsubscribe link in every marketing message, including RFC 8058 one-click (List-Unsubscribe-Post)."""

from django.core import signing
from django.http import HttpResponse
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt

from audiences.services import unsubscribe

from .models import Message
from .sender import UNSUBSCRIBE_SALT

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

"""Twilio WhatsApp: the SMS adapter with ``whatsapp:`` addresses and Content templates.

Outside the 24 h customer-service window WhatsApp only delivers approved templates, so a message
with a ``content_sid`` goes as ContentSid + ContentVariables (JSON) and no Body; a session reply
is plain text. Twilio itself refuses free text outside the window (error 63016).
"""

import json

from . import register
from .base import OutboundMessage
from .twilio_sms import TwilioSmsAdapter


class TwilioWhatsAppAdapter(TwilioSmsAdapter):
    """Business-initiated messages use an approved Content template (ContentSid + variables);
    free text is only allowed inside the 24 h session window (Twilio answers 63016 otherwise)."""

    provider = "twilio_whatsapp"
    channel = "whatsapp"
    address_prefix = "whatsapp:"

    def params(self, message: OutboundMessage) -> dict:
        params = super().params(message)
        if message.content_sid:
            params.pop("body", None)
            params["content_sid"] = message.content_sid
            params["content_variables"] = json.dumps(message.content_variables or {})
        return params


register(TwilioWhatsAppAdapter)

"""Demo data for the embedded default: sandbox sender accounts, contacts with consent, a list, a
segment, a template and a draft campaign — everything a marketer needs to click through a first send.

Idempotent: running it again changes nothing. Refused in production (it stores known credentials).
"""

import base64
import json
import random
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audiences.models import Consent, Contact, ContactList, ListMembership, Segment
from channels.models import ChannelAccount
from channels.sandbox.server import _signing_key

from .models import Campaign, CampaignChannel, MessageTemplate, TemplateContent

TWILIO = {"account_sid": "AC" + "d" * 32, "auth_token": "demo-auth-token"}


def sandbox_config_path() -> Path:
    return Path(settings.VAR_DIR) / "sandbox.json"


def _accounts(brand) -> dict[str, ChannelAccount]:
    key_file = Path(settings.VAR_DIR) / "sandbox-sendgrid-key.pem"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    public = base64.b64encode(
        _signing_key(str(key_file))
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    specs = {
        "sms": ("Demo SMS (sandbox)", "twilio_sms", TWILIO, {"from_number": "+4915100000001", "rate_per_second": 10}),
        "whatsapp": ("Demo WhatsApp (sandbox)", "twilio_whatsapp", TWILIO,
                     {"from_number": "+4915100000002", "rate_per_second": 10, "daily_quota": 250,
                      "quota_window": "rolling_24h"}),
        "email": ("Demo email (sandbox)", "sendgrid", {"api_key": "SG.demo-key", "webhook_public_key": public},
                  {"from_email": "news@demo.example", "rate_per_second": 100}),
        "telegram": ("Demo Telegram (sandbox)", "telegram", {"bot_token": "12345:demo-token"},
                     {"bot_username": "sandbox_bot", "rate_per_second": 30}),
    }  # fmt: skip
    accounts = {}
    for channel, (name, provider, credentials, fields) in specs.items():
        account = ChannelAccount.objects.filter(brand=brand, name=name).first()
        if account is None:
            account = ChannelAccount(brand=brand, name=name, channel=channel, provider=provider,
                                     base_url=settings.SANDBOX_URL, cost_per_message="0.0075", **fields)  # fmt: skip
            account.set_credentials(credentials)
            if channel == "telegram":
                account.set_webhook_secret("demo-telegram-secret")
            account.save()
        accounts[channel] = account
    config = {
        "sendgrid_events_url": f"{settings.PUBLIC_BASE_URL}/webhooks/sendgrid/{accounts['email'].pk}/events/",
        "private_key_file": str(key_file),
        "open_rate": 0.35,
        "click_rate": 0.08,
        "callback_delay_ms": 500,
    }
    sandbox_config_path().write_text(json.dumps(config, indent=2))
    return accounts


FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Lena", "Max"]
LAST = ["Müller", "Schmidt", "Weber", "Wagner", "Becker", "Hoffmann", "Koch", "Richter"]


def _contacts(brand, count: int = 500) -> ContactList:
    newsletter, _ = ContactList.objects.get_or_create(brand=brand, name="Newsletter")
    if newsletter.memberships.exists():
        return newsletter
    rng = random.Random(7)
    now = timezone.now()
    people = Contact.objects.bulk_create(
        Contact(
            brand=brand,
            external_id=f"demo-{i}",
            email=f"customer{i}@demo.example",
            phone=f"+49151{2000000 + i:07d}",
            whatsapp=f"+49151{2000000 + i:07d}",
            first_name=rng.choice(FIRST),
            last_name=rng.choice(LAST),
            locale=rng.choice(["de", "en"]),
            country=rng.choice(["DE", "DE", "AT", "CH"]),
            time_zone="Europe/Berlin",
            attributes={"tier": rng.choice(["basic", "basic", "premium"]), "score": rng.randint(0, 100)},
        )
        for i in range(1, count + 1)
    )
    ListMembership.objects.bulk_create(ListMembership(contact_list=newsletter, contact=p) for p in people)
    Consent.objects.bulk_create(
        Consent(contact=p, channel=channel, status="subscribed", source="demo", updated_at=now)
        for p in people
        for channel in ("email", "sms", "whatsapp")
        if rng.random() < 0.85
    )
    return newsletter


def seed(brand) -> None:
    with transaction.atomic():
        accounts = _accounts(brand)
        newsletter = _contacts(brand)
        premium, _ = Segment.objects.get_or_create(
            brand=brand, name="Premium in DE/AT",
            defaults={"rules": {"and": [
                {"field": "attributes.tier", "op": "equals", "value": "premium"},
                {"field": "country", "op": "in", "value": ["DE", "AT"]},
                {"field": "consent.email", "op": "equals", "value": "subscribed"},
            ]}},
        )  # fmt: skip
        template, created = MessageTemplate.objects.get_or_create(brand=brand, name="Spring sale")
        if created:
            TemplateContent.objects.create(
                template=template, locale="en", email_subject="{{ contact.first_name }}, spring is here: 20% off",
                email_preheader="Only this week",
                email_html="<h1>Hello {{ contact.first_name }}!</h1><p>Everything is 20% off this week.</p>",
                sms_text="Hi {{ contact.first_name }}, 20% off all week at Demo Brand.",
                whatsapp_text="Hi {{ contact.first_name }}, 20% off all week!",
                telegram_text="<b>Hi {{ contact.first_name }}</b>, 20% off all week!",
            )  # fmt: skip
            TemplateContent.objects.create(
                template=template, locale="de", email_subject="{{ contact.first_name }}, der Frühling ist da: 20 % Rabatt",
                email_html="<h1>Hallo {{ contact.first_name }}!</h1><p>Diese Woche 20 % auf alles.</p>",
                sms_text="Hallo {{ contact.first_name }}, diese Woche 20 % auf alles bei Demo Brand.",
                whatsapp_text="Hallo {{ contact.first_name }}, 20 % auf alles!",
                telegram_text="<b>Hallo {{ contact.first_name }}</b>, 20 % auf alles!",
            )  # fmt: skip
        campaign, created = Campaign.objects.get_or_create(brand=brand, name="Spring sale (demo)",
                                                           defaults={"goal": "Spring revenue"})  # fmt: skip
        if created:
            campaign.lists.add(newsletter)
            CampaignChannel.objects.create(campaign=campaign, position=0, account=accounts["email"], template=template)
            CampaignChannel.objects.create(campaign=campaign, position=1, account=accounts["sms"], template=template)
        del premium

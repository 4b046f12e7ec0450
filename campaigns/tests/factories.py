"""Building blocks for campaign tests: contacts with consent, accounts, templates, campaigns."""

from contextlib import contextmanager

from django.utils import timezone

from audiences.models import Consent, Contact, ContactList, ListMembership
from campaigns.models import Campaign, CampaignChannel, MessageTemplate, TemplateContent
from channels.models import ChannelAccount

PROVIDER = {"email": "sendgrid", "sms": "twilio_sms", "whatsapp": "twilio_whatsapp", "telegram": "telegram"}


def contacts(brand, count: int, *, consent=("email", "sms", "whatsapp"), list_name="Audience", start=0, **fields):
    """``count`` contacts with email, phone and WhatsApp, consented on ``consent``, in one list."""
    contact_list, _ = ContactList.objects.get_or_create(brand=brand, name=list_name)
    now = timezone.now()
    batch = [
        Contact(
            brand=brand,
            email=f"c{start + i}@example.test",
            phone=f"+1415{start + i:06d}1",  # never ends in 0000 / 9999 (the sandbox's failure rules)
            whatsapp=f"+1415{start + i:06d}1",
            first_name=f"C{start + i}",
            **fields,
        )
        for i in range(count)
    ]
    created = Contact.objects.bulk_create(batch, batch_size=2000)
    ListMembership.objects.bulk_create(
        [ListMembership(contact_list=contact_list, contact=c) for c in created], batch_size=2000
    )
    Consent.objects.bulk_create(
        [
            Consent(contact=c, channel=channel, status="subscribed", source="test", updated_at=now)
            for c in created
            for channel in consent
        ],
        batch_size=5000,
    )
    return contact_list, created


def account(brand, channel: str, base_url: str = "http://127.0.0.1:9", **limits) -> ChannelAccount:
    provider = limits.pop("provider", PROVIDER[channel])
    credentials = {
        "twilio_sms": {"account_sid": "AC" + "0" * 32, "auth_token": "token-test"},
        "twilio_whatsapp": {"account_sid": "AC" + "0" * 32, "auth_token": "token-test"},
        "sendgrid": {"api_key": "SG.test-key"},
        "telegram": {"bot_token": "123:ABC"},
        "webhook": {"url": base_url + "/hook", "secret": "s3cret"},
        "smtp": {"host": "127.0.0.1", "port": 25},
    }[provider]
    sender = {
        "sms": {"from_number": "+14155550000"},
        "whatsapp": {"from_number": "+14155550000"},
        "email": {"from_email": "news@brand.test", "from_name": "Brand"},
    }.get(channel, {})
    values = {"rate_per_second": 1000, "daily_quota": None, "cost_per_message": "0.0075", **limits}
    created = ChannelAccount(brand=brand, name=f"{channel} account", channel=channel, provider=provider,
                             base_url=base_url, **sender, **values)  # fmt: skip
    created.set_credentials(credentials)
    created.save()
    return created


def template(brand, name="Offer", purpose="marketing") -> MessageTemplate:
    created = MessageTemplate.objects.create(brand=brand, name=name, purpose=purpose)
    TemplateContent.objects.create(
        template=created,
        locale="en",
        email_subject="Hi {{ contact.first_name }}",
        email_html="<p>Hello {{ contact.first_name }}</p><p><a href='{{ unsubscribe_url }}'>unsubscribe</a></p>",
        sms_text="Hi {{ contact.first_name }}, 20% off today",
        whatsapp_text="Hi {{ contact.first_name }}",
        telegram_text="Hi <b>{{ contact.first_name }}</b>",
    )
    return created


def campaign(brand, contact_list, steps, **fields) -> Campaign:
    """``steps``: [(account, template), ...] in priority order."""
    created = Campaign.objects.create(brand=brand, name=fields.pop("name", "Spring sale"), **fields)
    created.lists.add(contact_list)
    for position, (acc, tpl) in enumerate(steps):
        CampaignChannel.objects.create(campaign=created, position=position, account=acc, template=tpl)
    return created


def send_inline(channel, ids):
    """An ``enqueue`` for ``dispatcher.dispatch``: each claimed batch sent in this process, at once."""
    from campaigns import sender

    sender.send_batch(ids)


def launched(created: Campaign) -> Campaign:
    from campaigns import services

    services.launch(created, "test")
    created.refresh_from_db()
    return created


@contextmanager
def update_plans(matches):
    """EXPLAIN (sequential scans off, as on a table too big to scan) of each UPDATE run inside the block
    whose SQL ``matches``: the list fills as they run. Which index a statement would use at scale."""
    from django.db import connection

    plans: list[str] = []

    def explain(execute, sql, params, many, context):
        if sql.startswith("UPDATE") and matches(sql):
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("EXPLAIN " + sql, params)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield plans

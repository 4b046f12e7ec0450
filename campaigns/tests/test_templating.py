import pytest
from django.core.exceptions import ValidationError

from campaigns.models import MessageTemplate, TemplateContent, TemplatePurpose
from campaigns.rendering import NoContentError, render_message
from campaigns.templating import TemplateError, check_template, html_to_text, render

CONTACT = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "locale": "de-AT",
           "attributes": {"tier": "gold"}}  # fmt: skip
LINKS = {"unsubscribe_url": "https://hub.test/u/abc", "preferences_url": "https://hub.test/p/abc"}


def test_renders_contact_fields_and_attributes():
    assert render("Hi {{ contact.first_name }}, {{ contact.attributes.tier }}", {"contact": CONTACT}) == "Hi Ada, gold"


def test_missing_values_render_empty_instead_of_failing():
    assert render("Hi {{ contact.nickname }}!", {"contact": CONTACT}) == "Hi !"


def test_html_mode_escapes_values():
    context = {"contact": {**CONTACT, "first_name": "<script>x</script>"}}
    assert render("<p>{{ contact.first_name }}</p>", context, html_mode=True) == "<p>&lt;script&gt;x&lt;/script&gt;</p>"


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ brand.name.__init__.__globals__ }}",
        "{{ contact.attributes.update({'x': 1}) }}",
    ],
)
def test_sandbox_refuses_private_attributes_and_mutation(source):
    context = {"contact": CONTACT, "brand": {"name": "B"}}
    try:
        output = render(source, context)
    except TemplateError as exc:
        assert "unsafe" in str(exc)
    else:
        # Jinja's sandbox renders unsafe attribute access as undefined (empty), never the object.
        assert "class" not in output and "function" not in output and output.strip() in ("", "()")
    assert CONTACT["attributes"] == {"tier": "gold"}


@pytest.mark.parametrize("html_mode", [False, True])
@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ contact.first_name }}",
        "{% for i in range(3) %}{{ i }}{{ loop.cycle('a', 'b') }}{% endfor %}",  # Jinja's globals
        "{% set ns = namespace(n=0) %}{% for k in contact.attributes %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
        "{% set range = 7 %}{{ range }} {{ contact.first_name | default_if_empty('x') }}",
        "{% set c = cycler('odd', 'even') %}{{ c.next() }}{{ c.next() }} {{ dict(a=1) }} {{ brand }}",
        "{{ contact.attributes.tier ~ '<&>' }} {{ lipsum(1, False, 3, 4) | length > 0 }}",
    ],
)
def test_rendering_is_exactly_jinjas_own_render(source, html_mode):
    """The sender's render builds Jinja's context itself (without copying the globals each time):
    the same globals, values and output as ``Template.render``."""
    from campaigns.templating import _compiled

    context = {"contact": CONTACT, "brand": {"name": "B&B"}, **LINKS}
    template, _ = _compiled(source, html_mode)
    assert render(source, context, html_mode=html_mode) == template.render(context)


def test_a_failing_template_raises_the_same_error_as_before():
    with pytest.raises(TemplateError, match="unsafe"):
        render("{{ contact.attributes.__setitem__('x', 1) }}", {"contact": CONTACT})
    with pytest.raises(TemplateError, match="ZeroDivisionError") as caught:  # a TemplateError, the cause kept
        render("{{ 1 / 0 }}", {}, field_name="sms_text")
    assert isinstance(caught.value.__cause__, ZeroDivisionError) and caught.value.field == "sms_text"


def test_syntax_errors_name_the_line():
    check = check_template("Hello\n{{ contact.first_name }\n", field_name="email_html")
    assert len(check.errors) == 1
    assert check.errors[0].line == 2 and check.errors[0].field == "email_html"
    assert "line 2" in str(check.errors[0])


def test_unknown_variables_are_warned_about():
    check = check_template("{{ coupon }} {{ contact.first_name }} {{ contact.shoe_size }} {{ unsubscribe_url }}")
    assert check.errors == []
    assert check.warnings == [
        "template: unknown variable 'coupon' renders empty",
        "template: contact.shoe_size is not a known field "
        "(known: first_name, last_name, email, phone, locale, external_id, attributes)",
    ]


def test_html_to_text_keeps_structure_and_links():
    source = "<html><head><style>p{}</style></head><body><h1>Sale</h1><p>Up to <b>50%</b> off</p>" \
             '<ul><li>Shoes</li><li>Bags</li></ul><a href="https://x.test">Shop</a></body></html>'  # fmt: skip
    assert html_to_text(source) == "Sale\n\nUp to 50% off\n\n- Shoes\n\n- Bags\n\nShop (https://x.test)"


@pytest.fixture
def template(brand_a):
    brand_a.default_locale = "en"
    brand_a.sms_opt_out_suffix = "Reply STOP to opt out"
    brand_a.legal_address = "1 Main St, Springfield"
    brand_a.save()
    template = MessageTemplate.objects.create(brand=brand_a, name="Spring sale")
    TemplateContent.objects.create(
        template=template,
        locale="en",
        email_subject="Hi {{ contact.first_name }}",
        email_html="<p>Hello {{ contact.first_name }}</p>",
        sms_text="Hi {{ contact.first_name }}, 20% off today",
        telegram_text="<b>Hi</b> {{ contact.first_name }}",
        telegram_button_text="Shop",
        telegram_button_url="https://shop.test/?c={{ contact.email }}",
        whatsapp_content_sid="HX123",
        whatsapp_variables={"1": "{{ contact.first_name }}"},
    )
    TemplateContent.objects.create(template=template, locale="de", email_subject="Hallo {{ contact.first_name }}",
                                   email_html="<p>Hallo</p>", sms_text="Hallo {{ contact.first_name }}")  # fmt: skip
    return template


def test_email_is_wrapped_in_the_brand_layout_with_address_and_unsubscribe(template):
    message = render_message(template=template, channel="email", contact={**CONTACT, "locale": "en"}, links=LINKS)
    assert message.subject == "Hi Ada"
    assert "<p>Hello Ada</p>" in message.html
    assert "1 Main St, Springfield" in message.html and 'href="https://hub.test/u/abc"' in message.html
    assert message.text.startswith("Hello Ada\n")
    assert message.text.endswith("Unsubscribe: https://hub.test/u/abc")


def test_locale_falls_back_from_region_to_language_to_brand_default(template):
    german = render_message(template=template, channel="email", contact=CONTACT, links=LINKS)  # de-AT -> de
    assert german.locale == "de" and german.subject == "Hallo Ada"
    french = render_message(template=template, channel="email", contact={**CONTACT, "locale": "fr"}, links=LINKS)
    assert french.locale == "en" and french.subject == "Hi Ada"


def test_sms_gets_the_opt_out_suffix_once(template):
    message = render_message(template=template, channel="sms", contact={**CONTACT, "locale": "en"}, links=LINKS)
    assert message.text == "Hi Ada, 20% off today Reply STOP to opt out"
    template.purpose = TemplatePurpose.TRANSACTIONAL
    transactional = render_message(template=template, channel="sms", contact={**CONTACT, "locale": "en"}, links=LINKS)
    assert transactional.text == "Hi Ada, 20% off today"


def test_telegram_and_whatsapp_parts(template):
    contact = {**CONTACT, "locale": "en"}
    telegram = render_message(template=template, channel="telegram", contact=contact, links=LINKS)
    assert telegram.text == "<b>Hi</b> Ada"
    assert telegram.button == {"text": "Shop", "url": "https://shop.test/?c=ada@example.com"}
    whatsapp = render_message(template=template, channel="whatsapp", contact=contact, links=LINKS)
    assert (whatsapp.content_sid, whatsapp.content_variables) == ("HX123", {"1": "Ada"})
    with pytest.raises(NoContentError):
        render_message(template=template, channel="whatsapp", contact=CONTACT, links=LINKS)  # German has none


def test_content_validation_names_field_and_line(template):
    content = TemplateContent(template=template, locale="fr", sms_text="ok", email_html="<p>\n{% if %}</p>")
    with pytest.raises(ValidationError) as caught:
        content.full_clean()
    assert "line 2" in caught.value.message_dict["email_html"][0]


def test_marketing_email_without_layout_needs_an_unsubscribe_link(template):
    template.use_brand_layout = False
    content = TemplateContent(template=template, locale="fr", email_html="<p>Bonjour</p>")
    with pytest.raises(ValidationError) as caught:
        content.full_clean()
    assert "unsubscribe_url" in caught.value.message_dict["email_html"][0]
    content.email_html = '<p>Bonjour</p><a href="{{ unsubscribe_url }}">Se désabonner</a>'
    content.full_clean()


def test_marketing_text_email_without_layout_needs_an_unsubscribe_link_too(template):
    """A text-only email, or a hand-written text part beside the HTML, is what some recipients read."""
    template.use_brand_layout = False
    text_only = TemplateContent(template=template, locale="fr", email_subject="Hi", email_text="Bonjour")
    with pytest.raises(ValidationError) as caught:
        text_only.full_clean()
    assert "unsubscribe_url" in caught.value.message_dict["email_text"][0]
    both = TemplateContent(
        template=template, locale="nl", email_html='<a href="{{ unsubscribe_url }}">Afmelden</a>', email_text="Hallo"
    )
    with pytest.raises(ValidationError) as caught:
        both.full_clean()
    assert list(caught.value.message_dict) == ["email_text"]
    both.email_text = "Hallo. Afmelden: {{ unsubscribe_url }}"
    both.full_clean()
    template.purpose = "transactional"
    TemplateContent(template=template, locale="sv", email_text="Hej").full_clean()  # not marketing: no link needed


DERIVABLE = [
    "<p>Hello {{ contact.first_name }}</p><p><a href='{{ unsubscribe_url }}'>unsubscribe</a></p>",
    "<h1>Hi {{ contact.first_name }} {{contact.last_name}}!</h1>\n<ul><li>{{ contact.attributes.tier }}</li>"
    '<li>two</li></ul><a href="https://x.test/?id={{ contact.email }}&amp;a=1">Shop</a>\n\n\n<p>  end  </p>',
    "<style>p {}</style><p>{{ brand.name }}</p><img alt='{{ contact.first_name }}'>&nbsp;{{ contact.locale }}",
    "<table><tr><td>{{ contact.first_name }}</td><td>&copy; {{ brand.name }}</td></tr></table>",
    "plain {{ contact.first_name }}\n\n\n\n{{ contact.last_name }}   {{ preferences_url }}",
]
NOT_DERIVABLE = [
    "{% if contact.first_name %}<p>Hi {{ contact.first_name }}</p>{% endif %}",
    "<p>{{ contact.first_name|upper }}</p>",
    "<p>&copy{{ contact.first_name }}</p>",
    "<{{ contact.first_name }}>x</p>",
    "<!-- {{ contact.first_name }} --><p>x</p>",
    "<p><a href='{{ contact.attributes.site }}'>site</a></p>",
    "<p>{{ contact.first_name }}</p>\r\n",
]
TRICKY_NAMES = ["Ada", "", "  Ada \n\n\n Lovelace\t ", "<b>Ada</b>", "&amp; &copy", "A\n", "x < y > z & 'q' \"r\""]


@pytest.mark.parametrize("source", DERIVABLE + NOT_DERIVABLE)
@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_derived_text_part_equals_parsing_each_rendering(source, name):
    """The text part derived once per template is exactly html_to_text of each recipient's HTML."""
    from campaigns.templating import text_part, text_template_from_html

    contact = {**CONTACT, "first_name": name, "last_name": name[::-1], "attributes": {"tier": name, "site": ""}}
    for links in (LINKS, {"unsubscribe_url": "https://hub.test/u/x"}, {}):
        context = {"contact": contact, "brand": {"name": f"Brand {name}"}, **links}
        html = render(source, context, html_mode=True)
        assert text_part(source, context, html) == html_to_text(html)
    assert (text_template_from_html(source) is not None) == (source in DERIVABLE)

"""Sandboxed Jinja2 for message content, and the brand's automatic wrapping.

Templates see plain data only — dicts of contact and brand fields, and links the hub generates —
never model instances, so a template cannot reach settings, the ORM or private attributes. The
environment is Jinja2's ImmutableSandboxedEnvironment: no attribute starting with "_", no
mutating calls, no imports.
"""

import functools
import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

from jinja2 import TemplateSyntaxError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# Names a template may use; anything else is warned about on save.
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "locale", "external_id", "attributes")
BRAND_FIELDS = ("name", "sender_name", "logo_url", "primary_colour", "secondary_colour", "legal_address")
LINK_NAMES = ("unsubscribe_url", "preferences_url")
TRACK_FUNCTION = "track"  # {{ track("https://…") }}: a tracked link (campaigns/tracking.py)
KNOWN_VARIABLES = frozenset({"contact", "brand", *LINK_NAMES, TRACK_FUNCTION})
UNSUBSCRIBE_VARIABLE = "unsubscribe_url"


class _RecordingUndefined(Undefined):
    """Renders as empty text, so one missing attribute never blocks a send."""

    __slots__ = ()

    def __str__(self) -> str:
        return ""


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(autoescape=autoescape, undefined=_RecordingUndefined)
    env.filters["default_if_empty"] = lambda value, fallback="": value or fallback
    # Without a message (the admin's preview and test send) a tracked link is its target itself;
    # rendering a message puts that message's tracker in the context, which overrides this.
    env.globals[TRACK_FUNCTION] = trackable_url
    return env


_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


class TemplateError(ValueError):
    """A template that cannot be used; ``field`` and ``line`` say where."""

    def __init__(self, message: str, *, field: str = "", line: int | None = None):
        self.field = field
        self.line = line
        where = f" (line {line})" if line else ""
        super().__init__(f"{message}{where}")


def trackable_url(value) -> str:
    """``value`` if it is an absolute http(s) URL, the only targets a tracked link redirects to."""
    url = value if isinstance(value, str) else str(value)
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc or _URL_FORBIDDEN.search(url):
        raise TemplateError(f"track() needs an absolute http(s) URL, not {url!r}")
    return str.__str__(url)  # a plain str (not Markup): HTML mode escapes it like any value


_HTML_ENV = _environment(autoescape=True)
_TEXT_ENV = _environment(autoescape=False)


@dataclass
class TemplateCheck:
    errors: list[TemplateError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_template(source: str, *, field_name: str = "") -> TemplateCheck:
    """Syntax errors (with their line) and warnings about variables the hub does not provide."""
    result = TemplateCheck()
    if not source:
        return result
    try:
        parsed = _TEXT_ENV.parse(source)
    except TemplateSyntaxError as exc:
        result.errors.append(TemplateError(f"template syntax error: {exc.message}", field=field_name, line=exc.lineno))
        return result
    for name in sorted(meta.find_undeclared_variables(parsed) - KNOWN_VARIABLES):
        result.warnings.append(f"{field_name or 'template'}: unknown variable {name!r} renders empty")
    for node in parsed.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name in ("contact", "brand"):
            allowed = CONTACT_FIELDS if node.node.name == "contact" else BRAND_FIELDS
            if node.attr not in allowed:
                result.warnings.append(
                    f"{field_name or 'template'}: {node.node.name}.{node.attr} is not a known field "
                    f"(known: {', '.join(allowed)})"
                )
    _check_track_calls(parsed, result, field_name)
    return result


def _check_track_calls(parsed: nodes.Template, result: TemplateCheck, field_name: str) -> None:
    """``track`` is called with one URL; a literal one must be an absolute http(s) URL (a value from
    a contact's attributes is checked when the message renders)."""
    called = set()
    for call in parsed.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == TRACK_FUNCTION):
            continue
        called.add(id(call.node))
        if len(call.args) != 1 or call.kwargs or call.dyn_args or call.dyn_kwargs:
            result.errors.append(TemplateError("track() takes one URL", field=field_name, line=call.lineno))
        elif isinstance(call.args[0], nodes.Const):
            try:
                trackable_url(call.args[0].value)
            except TemplateError as exc:
                result.errors.append(TemplateError(str(exc), field=field_name, line=call.lineno))
    for name in parsed.find_all(nodes.Name):
        if name.name == TRACK_FUNCTION and name.ctx == "load" and id(name) not in called:
            where = field_name or "template"
            result.warnings.append(f'{where}: track is a function: write {{{{ track("https://…") }}}}')


def uses_variable(source: str, name: str) -> bool:
    try:
        return name in meta.find_undeclared_variables(_TEXT_ENV.parse(source or ""))
    except TemplateSyntaxError:
        return False


@functools.lru_cache(maxsize=512)
def _compiled(source: str, html_mode: bool):
    """Compiling is most of a render's cost; a campaign renders the same few sources many times.

    Also the template's globals as a plain dict: ``Template.render`` copies them out of a ChainMap
    twice per call (``dict(globals, **vars)`` and ``set(globals)``), a third of a short render."""
    template = (_HTML_ENV if html_mode else _TEXT_ENV).from_string(source)
    return template, dict(template.globals)


def _render_template(template, globals_: dict, context: dict) -> str:
    """``template.render(context)``: the same context (globals, then the values), the same output
    and errors, without rebuilding the globals each time."""
    env = template.environment
    ctx = env.context_class(env, {**globals_, **context}, template.name, template.blocks, globals=globals_)
    try:
        return env.concat(template.root_render_func(ctx))
    except Exception:  # noqa: BLE001 - Jinja re-raises it with the template's line in the traceback
        env.handle_exception()


def render(source: str, context: dict, *, html_mode: bool = False, field_name: str = "") -> str:
    """Render ``source`` with plain-data ``context``; HTML mode escapes every value."""
    if not source:
        return ""
    try:
        return _render_template(*_compiled(source, html_mode), context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}", field=field_name, line=exc.lineno) from exc
    except SecurityError as exc:
        raise TemplateError(f"template tried something unsafe: {exc}", field=field_name) from exc
    except TemplateError as exc:  # track() refusing a URL only known now (a contact's attribute)
        if exc.field or not field_name:
            raise
        raise TemplateError(str(exc), field=field_name) from exc
    except Exception as exc:
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}", field=field_name) from exc


def contact_context(contact) -> dict:
    """Plain data of a contact (a model instance or any object/dict with those fields)."""
    get = contact.get if isinstance(contact, dict) else lambda name, default="": getattr(contact, name, default)
    data = {name: get(name, "") or "" for name in CONTACT_FIELDS if name != "attributes"}
    data["attributes"] = dict(get("attributes", None) or {})
    return data


def brand_context(brand) -> dict:
    return {name: getattr(brand, name, "") or "" for name in BRAND_FIELDS}


# -- brand consistency ------------------------------------------------------------------------------
def wrap_email_html(body_html: str, *, brand, unsubscribe_url: str) -> str:
    """The brand's header and footer around the body, with its postal address and an unsubscribe link."""
    header = brand.email_header_html or (
        f'<div style="padding:16px;background:{html.escape(brand.primary_colour)};color:#fff">'
        + (f'<img src="{html.escape(brand.logo_url)}" alt="" height="40">' if brand.logo_url else "")
        + f"<strong>{html.escape(brand.sender_name or brand.name)}</strong></div>"
    )
    footer = (
        f'<div style="padding:16px;font-size:12px;color:#666;background:{html.escape(brand.secondary_colour)}">'
        f"{brand.email_footer_html}"
        f"<p>{html.escape(brand.legal_address).replace(chr(10), '<br>')}</p>"
        f'<p><a href="{html.escape(unsubscribe_url)}">Unsubscribe</a></p></div>'
    )
    return f'<!doctype html><html><body style="margin:0">{header}<div style="padding:16px">{body_html}</div>{footer}</body></html>'


def wrap_email_text(body_text: str, *, brand, unsubscribe_url: str) -> str:
    lines = [body_text.rstrip(), "", "--", brand.sender_name or brand.name]
    if brand.legal_address:
        lines.append(brand.legal_address)
    lines.append(f"Unsubscribe: {unsubscribe_url}")
    return "\n".join(lines)


def with_sms_opt_out(text: str, *, brand) -> str:
    """Append the brand's opt-out suffix unless the text already carries it."""
    suffix = (brand.sms_opt_out_suffix or "").strip()
    if not suffix or suffix.lower() in text.lower():
        return text
    return f"{text.rstrip()} {suffix}"


SMS_VARIABLE_WIDTH = 10  # characters an SMS estimate counts for each {{ variable }} (a first name, a code)
SMS_TRACKED_URL = 40  # the target an estimate assumes for a track() whose URL is not written out
_SMS_TRACK_LITERAL = re.compile(r"""\{\{\s*track\(\s*(["'])(.*?)\1\s*\)\s*\}\}""", re.DOTALL)
_SMS_TRACK = re.compile(r"\{\{\s*track\(.*?\)\s*\}\}", re.DOTALL)
_SMS_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_SMS_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def tracked_link_width(url_length: int, base_length: int) -> int:
    """At least the length of ``{base}/c/<token>/`` for a target of ``url_length`` characters: the
    token is the message id and the URL as base64 JSON (4/3 of ~16 + the URL) and a 43-character
    signature (a few characters over the real length, never under it)."""
    return base_length + 4 + -(-(url_length + 16) * 4 // 3) + 44


def sms_estimate_text(source: str, *, brand) -> str:
    """An SMS template as a recipient would roughly get it, for counting before any contact is chosen:
    a ``{{ track("…") }}`` counted as its tracked link's length, any other ``{{ … }}`` as
    ``SMS_VARIABLE_WIDTH`` plain letters, tags and comments dropped, the brand's opt-out suffix
    appended. The admin's live counter (static/campaigns/sms_counter.js) does exactly this in the
    browser; a test holds the two to the same figures."""
    from django.conf import settings

    base = len(settings.PUBLIC_BASE_URL)
    text = _SMS_TRACK_LITERAL.sub(lambda m: "x" * tracked_link_width(len(m.group(2)), base), source)
    text = _SMS_TRACK.sub("x" * tracked_link_width(SMS_TRACKED_URL, base), text)
    text = _SMS_TAG.sub("", _SMS_EXPRESSION.sub("x" * SMS_VARIABLE_WIDTH, text))
    return with_sms_opt_out(text, brand=brand)


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset(
        {"p", "div", "br", "tr", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section"}
    )

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "a":
            self._href = dict(attrs).get("href")
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(source: str) -> str:
    """A readable text part from HTML: block elements become lines, links keep their URL."""
    parser = _TextExtractor()
    parser.feed(source or "")
    parser.close()
    return _normalize_text("".join(parser.parts))


def _normalize_text(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# -- the text part of an HTML email, derived once per template instead of once per recipient ------------
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PLAIN_VARIABLE = re.compile(r"\s*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\s*")
_MARK = "mhjinjavar{}x"
_MARKS = re.compile(r"mhjinjavar(\d+)x")


class _DerivingExtractor(_TextExtractor):
    """The text extractor, also noting every attribute value (where a variable may sit)."""

    def __init__(self):
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.attributes.extend((tag, name, value or "") for name, value in attrs)
        super().handle_starttag(tag, attrs)


@functools.lru_cache(maxsize=256)
def text_template_from_html(source: str) -> tuple[str, frozenset[str]] | None:
    """A text-mode template whose rendering, normalized, equals ``html_to_text`` of the HTML rendering,
    and the link variables that must not be empty for that to hold.

    ``html_to_text(render(html, html_mode=True))`` parses every recipient's HTML again; this parses
    the template once. Each ``{{ variable }}`` is swapped for a marker, the marked source goes
    through the same extractor, and the markers go back as the expressions. That is exact because
    HTML mode escapes each value and the parser unescapes it again, and whitespace normalization
    gives the same result before and after the values are put in. Only when that holds is a
    template derived; ``None`` (parse each rendering, as before) for anything else: statements or
    comments, filters or subscripts, ``\\r``, a variable right after ``&`` (it could complete a
    character reference), one inside a tag or a comment, or a link whose whole ``href`` is a
    variable other than the hub's links (the extractor drops an empty link but would keep its
    marker; ``text_part`` checks that those links are set).
    """
    if not source or "{%" in source or "{#" in source or "\r" in source or _MARKS.search(source):
        return None
    expressions: list[str] = []

    def mark(match: re.Match) -> str:
        expressions.append(match.group(1))
        return _MARK.format(len(expressions) - 1)

    marked = _EXPRESSION.sub(mark, source)
    if "{{" in marked or "}}" in marked or not all(_PLAIN_VARIABLE.fullmatch(e) for e in expressions):
        return None
    if re.search(r"&[#\w]*" + _MARK.format(r"\d+"), marked):
        return None
    parser = _DerivingExtractor()
    parser.feed(marked)
    parser.close()
    text = _normalize_text("".join(parser.parts))
    seen = [int(i) for i in _MARKS.findall(text)]
    required: set[str] = set()
    for tag, name, value in parser.attributes:
        found = [int(i) for i in _MARKS.findall(value)]
        if not (tag == "a" and name == "href"):
            seen += found  # a link's href is in the text already, as " (href)"
        elif found and not _MARKS.sub("", value):
            names = {expressions[i].strip() for i in found}
            if not names <= set(LINK_NAMES):
                return None  # a link that may render empty
            required |= names
    if sorted(seen) != sorted(set(seen)) or len(set(seen)) != len(expressions):
        return None  # a variable was dropped (tag name, comment, script) or doubled: parse each rendering
    return _MARKS.sub(lambda match: "{{" + expressions[int(match.group(1))] + "}}", text), frozenset(required)


def text_part(html_source: str, context: dict, rendered_html: str) -> str:
    """``html_to_text(rendered_html)``, from the template's derived text part when it has one."""
    derived = text_template_from_html(html_source)
    if derived is None or not all(isinstance(context.get(name), str) and context[name] for name in derived[1]):
        return html_to_text(rendered_html)
    return _normalize_text(render(derived[0], context))

"""Rendering a notification into a message, in the recipient's locale, with a sandboxed Jinja2.

One template per (name, locale, channel) under ``messages/<lang>/<name>.<channel>.j2``; a locale
without its own file falls back to its language, then to English. Emails render three parts
(subject, plain text, HTML with autoescaping); SMS render a body and a tail (payment link and
opt-out wording) and are shortened to at most two segments without ever cutting the tail.
Templates get two Babel filters in the recipient's locale: ``date`` (ISO date → long date) and
``money(currency)`` (integer minor units → formatted amount).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date
from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateNotFound, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from arrears_notifier.channels.segments import SmsLength, fit, measure
from arrears_shared.locales import babel_locale
from arrears_shared.money import format_money

TEMPLATE_DIR = Path(__file__).parent / "messages"
SMS_MAX_SEGMENTS = 2
CHANNELS = ("email", "sms")
# The most (template, locale, channel) combinations kept compiled (Jinja2's own cache holds 400).
MAX_COMPILED = 1024


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    text: str
    html: str | None
    sms: SmsLength | None = None


class TemplateMissing(LookupError):
    pass


def _babel_locale(locale: str) -> Locale:
    """The reader's Babel locale, English when Babel does not know it."""
    return babel_locale(locale) or Locale("en")


def _format_date(value: Any, locale: str) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value[:10])
        except ValueError:
            return str(value)
    if not isinstance(value, date):
        return str(value)
    return str(format_date(value, format="long", locale=_babel_locale(locale)))


def _format_money(amount_minor: Any, currency: str, locale: str) -> str:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError("money amounts are integer minor units")
    return format_money(amount_minor, currency, locale)


@pass_context
def _date_filter(context: Context, value: Any) -> str:
    return _format_date(value, str(context.get("_locale", "en")))


@pass_context
def _money_filter(context: Context, amount_minor: Any, currency: str) -> str:
    return _format_money(amount_minor, currency, str(context.get("_locale", "en")))


class Renderer:
    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=(), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=False,
        )
        # Filters read the recipient's locale from the render context, so one environment serves all.
        self.env.filters["date"] = _date_filter
        self.env.filters["money"] = _money_filter
        self.html_env = self.env.overlay(autoescape=True)
        self.directory = directory
        # (template, locale, channel) → the compiled templates found for it: chosen and compiled
        # once, not looked up (a file stat each to check it is up to date) for every message.
        self._compiled: dict[tuple[str, str, str], tuple[Template, Template | None]] = {}

    def catalog(self) -> list[dict[str, Any]]:
        """Every template name with the locales and channels it exists in."""
        found: dict[str, dict[str, set[str]]] = {}
        for path in sorted(self.directory.glob("*/*.j2")):
            if path.name.startswith("_"):
                continue
            name, channel, _ = path.name.split(".")
            found.setdefault(name, {}).setdefault(channel, set()).add(path.parent.name)
        return [
            {"name": name, "channels": {ch: sorted(locs) for ch, locs in sorted(by_channel.items())}}
            for name, by_channel in sorted(found.items())
        ]

    def exists(self, template: str) -> bool:
        return any(self.directory.glob(f"*/{template}.*.j2"))

    def _candidates(self, template: str, locale: str, channel: str) -> list[str]:
        lang = locale.replace("_", "-").split("-")[0].lower()
        return [f"{locale}/{template}.{channel}.j2", f"{lang}/{template}.{channel}.j2", f"en/{template}.{channel}.j2"]

    def _templates(self, template: str, locale: str, channel: str) -> tuple[Template, Template | None]:
        key = (template, locale, channel)
        found = self._compiled.get(key)
        if found is None:
            names = self._candidates(template, locale, channel)
            try:
                text_tpl = self.env.select_template(names)
                html_tpl = self.html_env.select_template(names) if channel == "email" else None
            except TemplateNotFound:
                raise TemplateMissing(f"no template {template!r} for channel {channel}") from None
            if len(self._compiled) >= MAX_COMPILED:  # locales come from requests: keep the cache bounded
                self._compiled.clear()
            found = self._compiled[key] = (text_tpl, html_tpl)
        return found

    def render(self, template: str, locale: str, channel: str, variables: dict[str, Any]) -> Rendered:
        text_tpl, html_tpl = self._templates(template, locale, channel)
        values = {**variables, "_locale": locale}
        if channel == "sms":
            body = " ".join(text_tpl.render({**values, "part": "body"}).split())
            tail = " ".join(text_tpl.render({**values, "part": "tail"}).split())
            text = fit(body, tail, SMS_MAX_SEGMENTS)
            return Rendered(None, text, None, measure(text))
        subject = " ".join(text_tpl.render({**values, "part": "subject"}).split())
        text = text_tpl.render({**values, "part": "text"}).strip() + "\n"
        html = (html_tpl.render({**values, "part": "html"}).strip() or None) if html_tpl is not None else None
        return Rendered(subject, text, html)

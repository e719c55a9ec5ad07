"""Rendering a notification into a message, in the recipient's locale, with a sandboxed Jinja2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_DIR = Path(__file__).parent / "messages"


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    text: str
    html: str | None


class TemplateMissing(LookupError):
    pass


class Renderer:
    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=(), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=False,
        )
        self.html_env = self.env.overlay(autoescape=True)
        self.directory = directory

    def _candidates(self, template: str, locale: str, channel: str) -> list[str]:
        lang = locale.replace("_", "-").split("-")[0].lower()
        return [f"{locale}/{template}.{channel}.j2", f"{lang}/{template}.{channel}.j2", f"en/{template}.{channel}.j2"]

    def render(self, template: str, locale: str, channel: str, variables: dict[str, Any]) -> Rendered:
        names = self._candidates(template, locale, channel)
        try:
            text_tpl = self.env.select_template(names)
            html_tpl = self.html_env.select_template(names)
        except TemplateNotFound:
            raise TemplateMissing(f"no template {template!r} for channel {channel}") from None
        if channel == "sms":
            return Rendered(None, " ".join(text_tpl.render(variables).split()), None)
        subject = " ".join(text_tpl.render({**variables, "part": "subject"}).split())
        text = text_tpl.render({**variables, "part": "text"}).strip() + "\n"
        html = html_tpl.render({**variables, "part": "html"}).strip() or None
        return Rendered(subject, text, html)

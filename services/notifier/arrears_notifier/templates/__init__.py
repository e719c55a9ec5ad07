"""Message templates: Jinja2, sandboxed, HTML autoescaped; one per template, locale and channel."""

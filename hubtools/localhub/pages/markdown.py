"""A card's Markdown -> safe HTML: markdown-it-py renders (tables, fenced code highlighted by Pygments),
nh3 sanitises, and repo-relative image and link targets become ``resolve/`` and ``blob/`` URLs.

A card is untrusted input: raw HTML in it is allowed through markdown-it (cards use ``<img>``,
``<details>``...) and then cut down by nh3 to an allow-list of tags and attributes, with http(s) and
mailto the only URL schemes; scripts, event handlers, ``javascript:`` URLs and SVG never survive, nor
any ``style``, ``id`` or class but Pygments' (a card cannot dress up as the site).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n.*?\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"}  # image maps carry their own links: not worth vetting
_ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES.setdefault("*", set()).update({"title", "lang"})
# A card may not borrow the site's classes (a fake "topbar" or "alert" over the real header): the only
# classes kept are those of the code highlighting the card's own fences get.
_CLASSES = {"pre": {"highlight"}, "span": {name for name in STANDARD_TYPES.values() if name}}
_ATTRIBUTES["img"].update({"title", "loading"})
_ATTRIBUTES["a"].update({"title"})
_ATTRIBUTES.setdefault("details", set()).add("open")
# The tags whose content goes too (the allow-list alone would keep their text).
_DROP_WITH_CONTENT = {"script", "style", "svg", "math", "iframe", "object", "embed", "template", "noscript"}
_FORMATTER = HtmlFormatter(nowrap=True)


def strip_front_matter(text: str) -> str:
    return _FRONT_MATTER.sub("", text, count=1)


def highlight_code(code: str, language: str | None = None, filename: str | None = None) -> str | None:
    """``code`` as highlighted HTML spans (no wrapper), or None when no lexer fits."""
    try:
        if language:
            lexer = get_lexer_by_name(language.split()[0])
        elif filename:
            lexer = get_lexer_for_filename(filename, code)
        else:
            return None
    except ClassNotFound:
        return None
    return highlight(code, lexer, _FORMATTER)


def _fence(code: str, language: str, _attrs: object) -> str:
    spans = highlight_code(code, language)
    if spans is None:
        return ""  # markdown-it then escapes the code itself
    return f'<pre class="highlight"><code>{spans}</code></pre>'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "highlight": _fence}).enable(["table", "strikethrough"])


def repo_target(value: str, repo_path: str, revision: str, mode: str) -> str:
    """A URL from a card as the browser should follow it: a repo-relative one (``images/grid.png``)
    becomes ``{repo_path}/{mode}/{revision}/images/grid.png``; anything else stays as it is."""
    value = value.strip()
    if not value or value.startswith(("#", "/", "?")) or _SCHEME.match(value):
        return value
    path = value.removeprefix("./").split("#", 1)[0].split("?", 1)[0]
    if not path:
        return value
    return f"{repo_path}/{mode}/{quote(revision, safe='')}/{quote(path)}"


def render_card(text: str, *, repo_path: str, revision: str) -> str:
    """The card's body (its YAML header left out) as sanitised HTML; ``repo_path`` is the repo's page
    path (``/ns/name`` or ``/datasets/ns/name``): repo images load from ``resolve/``, links open ``blob/``."""

    def rewrite(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            return repo_target(value, repo_path, revision, "resolve")
        if tag == "a" and attribute == "href":
            return repo_target(value, repo_path, revision, "blob")
        return value

    html = _markdown().render(strip_front_matter(text))
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ATTRIBUTES,
        allowed_classes=_CLASSES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        attribute_filter=rewrite,
    )


def pygments_css() -> str:
    return HtmlFormatter(style="friendly").get_style_defs(".highlight")

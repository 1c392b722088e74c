"""A griffe extension: render icr-async's reST-flavoured docstrings as Markdown.

The SDK's docstrings are prose written for ``help()`` and for readers of the source: they use
Sphinx roles (``:class:`~icr_async.testing.ICREmulator```), literal blocks introduced by
``::`` and, in two module docstrings, underlined section titles. mkdocstrings renders
docstrings as Markdown, where those would show as raw text, so before rendering:

* a role becomes inline code: ``:class:`~a.b.C``` -> ``C``, ``:meth:`X.y``` -> ``X.y``;
* a paragraph ending in ``::`` ends in ``:`` (the indented block after it is already a
  Markdown code block), and a line holding only ``::`` goes;
* an underlined title (``Fixtures`` over ``--------``) becomes a bold line, so that it does
  not become a heading competing with the API reference's own headings;
* a member of a blocking client made by one typed line
  (``get_installation = _blocking(AsyncICRClient.get_installation)``), which griffe sees as
  an attribute whose value is that call, gets a docstring linking to the async method it
  runs, in place of the call.

The docstrings in the package are not changed; only what the site shows. Loaded by
``mkdocs.yml`` (``extensions: [docs/griffe_roles.py]``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")
_UNDERLINED = re.compile(r"^(?P<title>\S[^\n]*)\n(?P<rule>[-=~^]{3,})[ \t]*$", re.M)
_LITERAL_ONLY = re.compile(r"^[ \t]*::[ \t]*\n", re.M)
_LITERAL_END = re.compile(r"(?<=\S)::[ \t]*$", re.M)
_TWIN = re.compile(r"^_(blocking|iterating|derived|Forward)\(\s*(\w+)\.(\w+)")
_TWIN_TEXT = {
    "blocking": "Blocking: runs [`{cls}.{name}`][icr_async.{cls}.{name}] and returns its value.",
    "iterating": "Blocking: a lazy iterator over [`{cls}.{name}`][icr_async.{cls}.{name}].",
    "derived": "Blocking: the twin of what [`{cls}.{name}`][icr_async.{cls}.{name}] returns.",
    "Forward": "The value of [`{cls}.{name}`][icr_async.{cls}.{name}].",
}


def _role(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _title(match: re.Match[str]) -> str:
    title, rule = match.group("title"), match.group("rule")
    if len(rule.strip()) < len(title.strip()) * 0.8:
        return match.group(0)  # a rule shorter than the line above is not an underline
    return f"**{title.strip()}**\n"


def markdown_docstring(text: str) -> str:
    """``text`` (a docstring's value) with roles, ``::`` and underlined titles converted."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL_ONLY.sub("", text)
    text = _LITERAL_END.sub(":", text)
    return _UNDERLINED.sub(_title, text)


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrites every docstring of the loaded package once, before mkdocstrings parses it."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[str] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.path in seen:
                continue
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = markdown_docstring(obj.docstring.value)
            if isinstance(obj, griffe.Attribute) and obj.path.startswith("icr_async.sync."):
                twin = _TWIN.match(str(obj.value or ""))
                if twin:
                    kind, cls, name = twin.groups()
                    text = _TWIN_TEXT[kind].format(cls=cls, name=name)
                    obj.docstring = griffe.Docstring(text, parent=obj)
                    obj.value = None
                    obj.annotation = None
            stack.extend(
                member
                for member in obj.members.values()
                if not member.is_alias and isinstance(member, griffe.Object)
            )

"""Small text helpers shared by the command line, the model card and the report's Markdown."""

from __future__ import annotations

import re

_ABBREVIATIONS = ("et al", "e.g", "i.e", "vs", "cf", "approx", "eq", "Eq", "resp", "incl")


def first_sentence(text: str) -> str:
    """The first sentence: up to the first '. ' that does not end an abbreviation (et al., e.g., i.e., a
    single capital as in "J. Smith") or an ellipsis ("' A', ' B', ... else")."""
    for match in re.finditer(r"\.\s", text):
        before = text[: match.start()]
        if before.endswith((*_ABBREVIATIONS, "..")) or re.search(r"\b[A-Z]$", before):
            continue
        return before + "."
    return text.strip()


def md_text(value) -> str:
    """``value`` as Markdown text that renders as itself: raw HTML from data (``<script>``, ``<img ...>``) is
    escaped (``&`` and ``<`` to entities: no tag can open; a lone ``>`` as in "rho > 1" stays readable), and
    a table cell's ``|`` and a line break cannot end the cell or the row."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_code(value) -> str:
    """``value`` as an inline code span (shown literally, HTML included); the fence is one backtick longer than
    the longest run of backticks in it, so the value cannot close it."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_fence(text: str, language: str = "") -> list[str]:
    """Lines of a fenced code block holding ``text`` literally (the fence outlasts any backtick run in it)."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return [fence + language, text, fence]

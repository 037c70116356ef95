"""Small text helpers shared by the command line and the model card."""

from __future__ import annotations

import re

_ABBREVIATIONS = ("et al", "e.g", "i.e", "vs", "cf", "approx", "eq", "Eq", "resp", "incl")


def first_sentence(text: str) -> str:
    """The first sentence: up to the first '. ' that does not end an abbreviation (et al., e.g., i.e., a
    single capital as in "J. Smith")."""
    for match in re.finditer(r"\.\s", text):
        before = text[: match.start()]
        if before.endswith(_ABBREVIATIONS) or re.search(r"\b[A-Z]$", before):
            continue
        return before + "."
    return text.strip()

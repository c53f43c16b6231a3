"""Keep personal data out of logs and dashboards.

Logs never carry comment text or user ids. Text kept for dashboards (the recent-comments
list) goes through :func:`redact_text` (e-mail addresses, phone numbers).
"""

from __future__ import annotations

import re

__all__ = ["redact_text"]

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# 7+ digits with the usual separators, optionally international; dates like 2024-01-02 have 8
# digits too, so require a run that does not look like an ISO date.
_PHONE = re.compile(r"(?<![\w])(?:\+?\d[\d ().-]{6,}\d)(?![\w])")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def redact_text(text: str) -> str:
    """Replace e-mail addresses and phone numbers with placeholders."""
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(_phone_or_keep, text)


def _phone_or_keep(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = sum(ch.isdigit() for ch in found)
    if digits < 7 or _ISO_DATE.match(found.strip()):
        return found
    return "[phone]"

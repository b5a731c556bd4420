"""What counts as a secret, and how it is kept out of output, logs and the lock.

One detector for both uses: log redaction (``Redactor``) and the lock's
refusal (``looks_secret``). A known key is matched exactly; anything shaped
like an E2B API key (``e2b_`` and at least 16 letters or digits) is treated
as one even when it is not the key of this run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

KEY_SHAPE = re.compile(r"\be2b_[A-Za-z0-9]{16,}")
SECRET_NAME = re.compile(r"(?i)passw|secret|token|api[_-]?key|credential|private[_-]?key")
MASK = "***"
MIN_SECRET_LEN = 8  # shorter strings would match everywhere; a real key is far longer


class Redactor:
    """Replaces each known secret, and anything shaped like an E2B key, with ***."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        return KEY_SHAPE.sub("e2b_" + MASK, text)

    __call__ = redact


def looks_secret(name: str, value: str, known: Iterable[str | None] = ()) -> bool:
    """Would storing ``value`` under ``name`` leak a secret?"""
    if not value:
        return False
    if SECRET_NAME.search(name) or KEY_SHAPE.search(value):
        return True
    return any(s and len(s) >= MIN_SECRET_LEN and s in value for s in known)

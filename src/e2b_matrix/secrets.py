"""What counts as a secret, and how it is kept out of output, logs and the lock.

One detector for every use: redaction (``Redactor``), applied where text
leaves the process — the console streams (``RedactedStream``, which the CLI
puts in front of stdout and stderr, so plain lines, the live table, JSON and
errors all pass it) and the log files (logs.RedactingFormatter) — and the
refusal of a secret in the lock or in a variant's input (``looks_secret``).
A known key is matched exactly; anything shaped like an E2B API key
(``e2b_`` and at least 16 letters or digits) is treated as one even when it
is not the key of this run; so is a password inside a URL
(``https://user:password@host``) and a token given as a URL's user
(``https://<16 or more characters>@host``): the password or token is masked.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterable
from typing import TextIO

KEY_SHAPE = re.compile(r"\be2b_[A-Za-z0-9]{16,}")
# A URL's credentials: ``scheme://user:password@`` (group 3: the password) or a token as the user
# (``scheme://<token>@``, group 4: 20 or more characters, at least 4 of them digits and 4 letters).
# A user name alone (``ssh://git@host``, ``fake://nexus-sandbox-latest@build``) is a name, not a secret.
URL_CREDENTIALS = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*://)(?:([^\s/?#@:]*):([^\s/?#@]+)|"
    r"((?=(?:[^\s/?#@]*\d){4})(?=(?:[^\s/?#@]*[a-z]){4})[a-z0-9_.~%-]{20,}))@"
)
SECRET_NAME = re.compile(r"(?i)passw|secret|token|api[_-]?key|credential|private[_-]?key")
MASK = "***"
MIN_SECRET_LEN = 8  # shorter strings would match everywhere; a real key is far longer


class Redactor:
    """Replaces each known secret, and anything shaped like an E2B key, with ***."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        if "://" in text:
            text = URL_CREDENTIALS.sub(_mask_url, text)
        return KEY_SHAPE.sub("e2b_" + MASK, text)

    __call__ = redact


class RedactedStream(io.TextIOBase):
    """A text stream in front of another that redacts each whole line written to it.

    Text is held until its line ends (or until ``flush``), so a secret split across
    two writes (``print`` writes the text, then the newline) is still seen whole.
    """

    MAX_PENDING = 1 << 16  # a line this long is written out redacted as it stands

    def __init__(self, inner: TextIO, redactor: Redactor) -> None:
        self.inner, self.redactor = inner, redactor
        self._pending = ""
        self._lock = threading.Lock()  # builds report from worker threads

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            data = self._pending + text
            head, newline, self._pending = data.rpartition("\n")
            if newline:
                self.inner.write(self.redactor.redact(head + newline))
            if len(self._pending) > self.MAX_PENDING:
                self.inner.write(self.redactor.redact(self._pending))
                self._pending = ""
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.inner.write(self.redactor.redact(self._pending))
                self._pending = ""
        self.inner.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    # io.TextIOBase's encoding and errors are read-only properties (typeshed declares attributes)
    @property
    def encoding(self) -> str:  # type: ignore[override]  # a property, as io.TextIOBase's own (see above)
        return self.inner.encoding or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]  # a property, as io.TextIOBase's own (see above)
        return self.inner.errors


def _mask_url(m: re.Match[str]) -> str:
    return f"{m.group(1)}{m.group(2)}:{MASK}@" if m.group(3) is not None else f"{m.group(1)}{MASK}@"


def looks_secret(name: str, value: str, known: Iterable[str | None] = ()) -> bool:
    """Would storing ``value`` under ``name`` leak a secret?"""
    if not value:
        return False
    if SECRET_NAME.search(name) or KEY_SHAPE.search(value) or ("://" in value and URL_CREDENTIALS.search(value)):
        return True
    return any(s and len(s) >= MIN_SECRET_LEN and s in value for s in known)

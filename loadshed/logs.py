"""Logging set-up, and redaction: no secret reaches a log line.

Every handler loadshed installs formats through `RedactingFormatter`, which replaces each
registered secret (passwords, local keys) with "***" in the finished line, whatever code or
library logged it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Final, TextIO

MASK: Final = "***"
MIN_SECRET_LEN: Final = 3  # shorter values would mask ordinary words and digits

_secrets: set[str] = set()
_lock = threading.Lock()


def redact_secrets(values: Iterable[str]) -> None:
    """Register values that must never appear in a log line."""
    with _lock:
        _secrets.update(v for v in values if len(v) >= MIN_SECRET_LEN)


def redact(text: str) -> str:
    """Return text with every registered secret masked."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(
    stream: TextIO,
    *,
    debug: bool = False,
    level: int = logging.WARNING,
    fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s",
) -> None:
    """Send log lines to stream, timestamped, redacted; DEBUG everything with --debug."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else level)
    if not debug:
        # The device libraries log every retry; loadshed reports outcomes itself.
        for noisy in ("kasa", "tinytuya", "tesla_powerwall", "aiohttp", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)

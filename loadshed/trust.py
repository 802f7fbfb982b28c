"""trust.json: the Powerwall gateway's certificate, pinned on first contact (trust on first use).

Gateways serve HTTPS with a self-signed certificate, so there is no authority to check it
against: like SSH, loadshed keeps the SHA-256 of the certificate it met first, per gateway
address, in the state dir, and meets every later connection with it. A different certificate
(a replaced gateway, or someone in the middle) makes the house *unknown* and is said; the
password is never sent to it. `loadshed check --trust-powerwall` accepts the new one.

The file is small JSON, written atomically (temporary file, fsync, rename), readable by its
owner only. One that cannot be read is treated as empty and rewritten: it holds no secret, and
a pin lost costs only the first-contact check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Final

_LOG = logging.getLogger(__name__)

TRUST_FILE: Final = "trust.json"
TRUST_VERSION: Final = 1


class CertificateChanged(Exception):
    """The gateway presented a certificate other than the one pinned for it."""

    def __init__(self, key: str, pinned: str, got: str) -> None:
        super().__init__(f"certificate of {key} changed")
        self.key = key
        self.pinned = pinned
        self.got = got


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, as hex pairs: "ab:cd:..." (as browsers show it)."""
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class Trust:
    """The pinned certificates of one state dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._unsaved: dict[str, str] = {}  # pins a failed write could not keep on disk

    def pinned(self, key: str) -> str | None:
        return self._load().get(key)

    def check(self, key: str, der: bytes) -> str:
        """Pin der for key on first contact; raise CertificateChanged if it differs."""
        got = fingerprint(der)
        pins = self._load()
        pinned = pins.get(key)
        if pinned is None:
            pins[key] = got
            self._save(pins)
            _LOG.info("Powerwall %s: certificate pinned on first contact (SHA-256 %s)", key, got)
            return got
        if pinned != got:
            raise CertificateChanged(key, pinned, got)
        return got

    def forget(self, key: str) -> str | None:
        """Drop the pin of key (the owner replaced the gateway); return what it was."""
        pins = self._load()
        old = pins.pop(key, None)
        if old is not None:
            self._save(pins)
        return old

    def _load(self) -> dict[str, str]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return dict(self._unsaved)
        except (OSError, ValueError) as err:
            _LOG.warning("%s could not be read (%s): starting it anew", self.path, err)
            return dict(self._unsaved)
        pins = doc.get("powerwall") if isinstance(doc, dict) else None
        if not isinstance(pins, dict):
            return dict(self._unsaved)
        return {**self._unsaved, **{str(k): v for k, v in pins.items() if isinstance(v, str)}}

    def _save(self, pins: dict[str, str]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(TRUST_FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                json.dump({"version": TRUST_VERSION, "powerwall": pins}, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._unsaved = {}
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._unsaved = dict(pins)
            _LOG.warning("cannot write %s: %s (the pin lasts until loadshed stops)", self.path, err)

"""The Tuya cloud: the account's devices and their local keys, and the keys kept in the state dir.

A plug paired again in the Smart Life app gets a new local key and the old one silently stops
working. With the four TUYAAPI* values of config.py (a project on iot.tuya.com linked to the app
account) `TuyaCloud` lists the account's devices — ids, names, local keys — through
tinytuya.Cloud, and `KeyCache` keeps the keys in `tuya-keys.json` in the state dir, so loadshed
switches a re-paired plug with its new key in the next outage, when the internet is often down.
config.py is never rewritten.

The client. tinytuya.Cloud logs in from its constructor (before its host could be pointed
elsewhere) unless given a token, so it gets a placeholder and logs in explicitly; `urlhost`
replaces the region's API host (a loopback stand-in in tests: LOADSHED_TUYA_CLOUD_HOST, with
REQUESTS_CA_BUNDLE naming the stand-in's CA). `requests` is called with no timeout, so every
call runs on a daemon thread of its own under an outer deadline: a cloud that never answers
costs the caller the deadline and one parked thread, never the process's exit (an executor's
threads are joined at exit). Every failure is one `CloudError` line naming what to check; the
API secret is never logged or shown, and tinytuya's own DEBUG lines (which carry it, and the
access token) are kept out of every log.

The cache. Small JSON, versioned, written atomically (temporary file, fsync, rename), 0600 in a
0700 dir. A file that cannot be read is set aside as `tuya-keys.json.corrupt-<time>` and said
(`problems`); the good entries of a partly damaged one are kept. A cached key is used instead of
config.py's when it is newer: the cloud confirmed it after config.py was last written, or it
replaced exactly the key config.py still has (an unrelated edit of config.py does not bring the
old key back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import requests
import tinytuya  # type: ignore[import-untyped]

from loadshed.config import Config
from loadshed.errors import LoadshedError
from loadshed.logs import redact_secrets
from loadshed.state import make_private_dir, write_private

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

CLOUD_DEADLINE_S: Final = 20.0  # the whole listing: a token and three requests; ~1 s when well
HOST_ENV: Final = "LOADSHED_TUYA_CLOUD_HOST"  # host[:port] instead of the region's API host
KEYS_FILE: Final = "tuya-keys.json"
KEYS_VERSION: Final = 1
KEY_CHARS: Final = 16
PLACEHOLDER_TOKEN: Final = "loadshed"  # keeps tinytuya's constructor off the network
LIBRARY_LOG_LEVEL: Final = logging.INFO  # tinytuya's DEBUG lines carry the secret and token
SHOWN_CHARS: Final = 80  # of a cloud's message quoted in an error line

# Keep tinytuya's DEBUG output (request headers: the secret, the access token) out of logs.
logging.getLogger("tinytuya").setLevel(LIBRARY_LOG_LEVEL)

# What the cloud says, and what the owner should check (codes from Tuya's OpenAPI).
_HINTS: Final = (
    ("sign invalid", "check TUYAAPISECRET (the project's Access Secret) and TUYAAPIKEY"),
    ("clientid is invalid", "check TUYAAPIKEY (the project's Access ID / Client ID)"),
    (
        "permission deny",
        "check TUYAAPIDEVICEID (a device of the app account linked to the project) and "
        "TUYAAPIREGION (the project's data center)",
    ),
    ("expired", "the project's IoT Core service may have expired: renew it on iot.tuya.com"),
    ("request time is invalid", "this computer's clock is wrong: set it (NTP)"),
)


class CloudError(LoadshedError):
    """The Tuya cloud could not be asked; str() is one line for the owner."""


@dataclass(frozen=True, slots=True)
class CloudDevice:
    """One device of the account, as the Tuya cloud lists it."""

    id: str
    name: str
    key: str = field(repr=False)
    mac: str = ""
    category: str = ""  # "cz" socket, "pc" power strip, "kg" switch, ...
    product_name: str = ""
    sub: bool = False  # behind a gateway (Zigbee): not reachable on an IP of its own


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A local key the Tuya cloud gave, as kept in tuya-keys.json."""

    id: str
    name: str
    key: str = field(repr=False)
    confirmed_at: float  # wall time the cloud last said this is the key
    replaces: str = ""  # fingerprint of the config.py key it differed from, if it did


def fingerprint(key: str) -> str:
    """A short digest of a local key: recognises it without keeping it."""
    return hashlib.sha256(b"loadshed tuya local key\0" + key.encode()).hexdigest()[:16]


# --- the client --------------------------------------------------------------------------------


class TuyaCloud:
    """The Tuya cloud of one iot.tuya.com project (the four TUYAAPI* values)."""

    def __init__(
        self,
        region: str,
        api_key: str,
        api_secret: str,
        device_id: str,
        *,
        urlhost: str | None = None,
        deadline_s: float = CLOUD_DEADLINE_S,
    ) -> None:
        self.region = region
        self.deadline_s = deadline_s
        self._api_key = api_key
        self._secret = api_secret  # never logged, never in repr or a message
        self._device_id = device_id
        self._urlhost = urlhost
        self._idle = threading.Event()  # no call of ours is parked on the cloud
        self._idle.set()
        redact_secrets([api_secret])

    @classmethod
    def from_config(
        cls,
        config: Config,
        env: Mapping[str, str] | None = None,
        *,
        deadline_s: float = CLOUD_DEADLINE_S,
    ) -> TuyaCloud | None:
        """The cloud config.py names, or None when a TUYAAPI* value is missing."""
        if not is_configured(config):
            return None
        env = os.environ if env is None else env
        return cls(
            config.tuya_region,
            config.tuya_api_key,
            config.tuya_api_secret,
            config.tuya_api_device_id,
            urlhost=env.get(HOST_ENV) or None,
            deadline_s=deadline_s,
        )

    def __repr__(self) -> str:
        return f"TuyaCloud({self.where})"

    @property
    def host(self) -> str:
        """The API host asked: the region's, or the one that replaces it."""
        return self._urlhost or str(self._client().urlhost)

    @property
    def where(self) -> str:
        """Say which cloud: "us, openapi.tuyaus.com"."""
        return f"{self.region}, {self.host}"

    async def fetch(self) -> list[CloudDevice]:
        """List the account's devices, on a thread of its own, within deadline_s.

        Raises CloudError (one line) for anything that goes wrong; never blocks the loop.
        While an earlier call is still parked on a cloud that never answered, no new thread is
        started: a cloud hung for days costs one thread, not one per attempt.
        """
        if not self._idle.is_set():
            raise CloudError(self._say("still no answer to the previous request"))
        self._idle.clear()

        def work() -> list[CloudDevice]:
            try:
                return self.fetch_now()
            finally:
                self._idle.set()

        try:
            return await in_thread(work, self.deadline_s, "tuya-cloud")
        except TimeoutError:
            raise CloudError(self._say(f"no answer in {self.deadline_s:g} s")) from None

    def fetch_now(self) -> list[CloudDevice]:
        """List the account's devices; blocking, and unbounded: call it through fetch()."""
        try:
            cloud = self._client()
            token = cloud._gettoken()  # what the constructor would have done, at our host
            if not isinstance(token, str):
                raise CloudError(self._say(_reason(token, cloud.error)))
            listed = cloud.getdevices()
        except CloudError:
            raise
        except requests.exceptions.SSLError as err:
            raise CloudError(
                self._say(f"its certificate was refused ({_tls_reason(err)})")
            ) from None
        except requests.exceptions.RequestException as err:
            raise CloudError(
                self._say(f"cannot reach it ({type(err).__name__}): is the internet up?")
            ) from None
        except OSError as err:  # requests: a REQUESTS_CA_BUNDLE that names no file
            raise CloudError(self._say(f"cannot reach it ({_tls_reason(err)})")) from None
        except Exception as err:  # tinytuya indexes replies without checking them
            _LOG.debug("Tuya cloud listing failed", exc_info=True)
            raise CloudError(
                self._say(f"an answer loadshed cannot read ({type(err).__name__})")
            ) from None
        if isinstance(listed, Mapping):
            raise CloudError(self._say(_reason(listed, None)))
        devices = devices_from_cloud(listed)
        redact_secrets(d.key for d in devices)
        return devices

    def _client(self) -> Any:
        cloud = tinytuya.Cloud(
            apiRegion=self.region,
            apiKey=self._api_key,
            apiSecret=self._secret,
            apiDeviceID=self._device_id,
            initial_token=PLACEHOLDER_TOKEN,
        )
        if self._urlhost:
            cloud.urlhost = self._urlhost
        return cloud

    def _say(self, problem: str) -> str:
        text = f"Tuya cloud ({self.where}): {problem}"
        return text.replace(self._secret, "***") if self._secret else text


def is_configured(config: Config) -> bool:
    """Whether config.py sets all four TUYAAPI* values (the region always has one)."""
    return bool(config.tuya_api_key and config.tuya_api_secret and config.tuya_api_device_id)


MISSING_CREDENTIALS: Final = (
    "set TUYAAPIKEY, TUYAAPISECRET and TUYAAPIDEVICEID (and TUYAAPIREGION) in config.py: the "
    "Access ID and Secret of a project on iot.tuya.com linked to your Smart Life app account, "
    "and the id of one of its devices"
)


def devices_from_cloud(listed: object) -> list[CloudDevice]:
    """Map tinytuya.Cloud.getdevices()'s list to CloudDevices (entries without an id skipped)."""
    if not isinstance(listed, Sequence):
        return []
    devices = []
    for item in listed:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        devices.append(
            CloudDevice(
                id=item["id"],
                name=_text(item.get("name")) or item["id"],
                key=_text(item.get("key")),
                mac=_text(item.get("mac")),
                category=_text(item.get("category")),
                product_name=_text(item.get("product_name")),
                sub=item.get("sub") is True,
            )
        )
    return devices


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _reason(error: object, fallback: object) -> str:
    """One line from one of tinytuya's error dicts, with what to check."""
    text = ""
    for candidate in (error, fallback):
        if isinstance(candidate, Mapping) and (candidate.get("Payload") or candidate.get("Error")):
            text = str(candidate.get("Payload") or candidate["Error"])  # Payload: the details
            break
    quoted = re.search(r"'([^']*)'", text)
    said = quoted.group(1) if quoted else text
    code = re.search(r"Code (\d+)", text)
    if not said or said == "None":
        said = "no usable answer"
    said = said[:SHOWN_CHARS]
    line = f"it said {said!r}" + (f" (code {code.group(1)})" if code else "")
    for words, hint in _HINTS:
        if words in said.lower():
            return f"{line}: {hint}"
    return line


def _tls_reason(err: BaseException) -> str:
    found = re.search(r"certificate verify failed: ([^(]*)", str(err))
    if found:
        return f"certificate verify failed: {found.group(1).strip()}"
    return (str(err).splitlines()[0] if str(err) else type(err).__name__)[:SHOWN_CHARS]


async def in_thread(work: Callable[[], T], deadline_s: float, name: str) -> T:
    """Run work on a daemon thread of its own; raise TimeoutError after deadline_s.

    Not an executor: its threads are joined at exit, and a call blocked forever (requests has
    no timeout) would then hold the process. A thread past its deadline is left to end on its
    own; its result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = work()
        except BaseException as err:
            outcome: tuple[T | None, BaseException | None] = (None, err)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    async with asyncio.timeout(deadline_s):
        return await future


# --- the cache ---------------------------------------------------------------------------------


class KeyCache:
    """tuya-keys.json in one state dir."""

    def __init__(self, state_dir: Path, *, wall: Callable[[], float] = time.time) -> None:
        self.dir = state_dir
        self.path = state_dir / KEYS_FILE
        self.problems: list[str] = []  # from the last load(): one line each, for the owner
        self._wall = wall

    def load(self) -> dict[str, CachedKey]:
        """The cached keys by device id; {} when there are none or the file is unusable."""
        self.problems = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            return self._set_aside(f"cannot be read: {_why(err)}", {})
        try:
            doc = json.loads(text)
        except ValueError:
            return self._set_aside("is not JSON", {})
        if not isinstance(doc, dict) or not isinstance(doc.get("devices"), dict):
            return self._set_aside("has no device list", {})
        version = doc.get("version")
        if type(version) is int and version > KEYS_VERSION:
            self.problems.append(
                f"{self.path} was written by a newer loadshed (version {version}): not used; "
                "local keys come from config.py"
            )
            return {}
        keys: dict[str, CachedKey] = {}
        bad = 0
        for dev_id, entry in doc["devices"].items():
            cached = _entry(dev_id, entry)
            if cached is None:
                bad += 1
            else:
                keys[dev_id] = cached
        if version != KEYS_VERSION or bad:
            why = f"version {version!r}" if version != KEYS_VERSION else f"{bad} bad entries"
            keys = self._set_aside(f"is damaged ({why})", keys)
        redact_secrets(k.key for k in keys.values())
        return keys

    def save(self, devices: Sequence[CloudDevice], config: Config) -> dict[str, CachedKey]:
        """Keep what the cloud listed just now; return the whole cache.

        A device the listing leaves out keeps its entry (a listing cut short must not bring
        the old keys back). Raises OSError (disk full, read-only) and leaves the old file whole.
        """
        keys = self.merged(devices, config)
        self._write(keys)
        return keys

    def merged(self, devices: Sequence[CloudDevice], config: Config) -> dict[str, CachedKey]:
        """What save() writes: the cache as it is, updated with what the cloud listed."""
        return {**self.load(), **self.entries(devices, config)}

    def entries(self, devices: Sequence[CloudDevice], config: Config) -> dict[str, CachedKey]:
        """The cache entries for devices the cloud listed just now."""
        now = self._wall()
        in_config = {d.id: d.key for d in config.tuya_devices}
        keys = {}
        for device in devices:
            if len(device.key) != KEY_CHARS:
                continue  # a device without a local key (a sub-device, a cloud-only one)
            old = in_config.get(device.id, device.key)
            replaces = fingerprint(old) if old != device.key else ""
            keys[device.id] = CachedKey(device.id, device.name, device.key, now, replaces)
        return keys

    def _write(self, keys: Mapping[str, CachedKey]) -> None:
        doc = {
            "version": KEYS_VERSION,
            "fetched_at": self._wall(),
            "devices": {
                k.id: {
                    "name": k.name,
                    "key": k.key,
                    "confirmed_at": k.confirmed_at,
                    "replaces": k.replaces,
                }
                for k in keys.values()
            },
        }
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        make_private_dir(self.dir)
        # Unique: the daemon and `loadshed check` may write at the same moment.
        tmp = self.path.with_name(f"{KEYS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        write_private(self.path, text, tmp)

    def _set_aside(self, why: str, keep: dict[str, CachedKey]) -> dict[str, CachedKey]:
        """Move the damaged file aside, say so, and write back the entries that were good."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self._wall()))
        aside = self.path.with_name(f"{KEYS_FILE}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(aside):
            aside = self.path.with_name(f"{KEYS_FILE}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(self.path, aside)
            kept = f"kept it as {aside.name}"
        except OSError as err:
            kept = f"could not move it aside ({_why(err)})"
        if keep:
            with contextlib.suppress(OSError):
                self._write(keep)
        saved = f"{len(keep)} good entries kept; " if keep else ""
        self.problems.append(
            f"{self.path} {why}: {kept}; {saved}local keys are fetched from the Tuya cloud "
            "again at the next refresh"
        )
        return keep

    def keys_for(self, config: Config, cached: Mapping[str, CachedKey]) -> dict[str, str]:
        """The local key to use for each TUYA_DEVICES id: the cached one when it is newer than
        config.py's (see the module's docstring), else config.py's."""
        try:
            written = config.path.stat().st_mtime
        except OSError:
            written = 0.0
        keys = {}
        for device in config.tuya_devices:
            entry = cached.get(device.id)
            newer = entry is not None and (
                entry.confirmed_at > written or entry.replaces == fingerprint(device.key)
            )
            keys[device.id] = entry.key if entry is not None and newer else device.key
        return keys


def _entry(dev_id: object, entry: object) -> CachedKey | None:
    if not isinstance(dev_id, str) or not isinstance(entry, dict):
        return None
    key, name = entry.get("key"), entry.get("name", "")
    confirmed, replaces = entry.get("confirmed_at"), entry.get("replaces", "")
    if not isinstance(key, str) or len(key) != KEY_CHARS or not isinstance(name, str):
        return None
    if isinstance(confirmed, bool) or not isinstance(confirmed, int | float):
        return None
    if not isinstance(replaces, str):
        return None
    return CachedKey(dev_id, name, key, float(confirmed), replaces)


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return type(err).__name__

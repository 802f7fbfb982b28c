"""Local keys from the Tuya cloud, put to use: the daemon's daily refresh and `check`'s repair.

A plug paired again in the Smart Life app gets a new local key; the old one in config.py
silently stops working. With the TUYAAPI* values set:

- `start_key_refresh` (the daemon): the keys cached in the state dir are used at once, then a
  task on the monitor's loop asks the cloud at start and once a day (hourly while the internet is
  down), keeps what it says in tuya-keys.json and gives the plugs their current keys, used from
  their next call. The cloud call runs on a thread of its own under a deadline: it never holds
  the poll loop, and a cloud that never answers costs one parked thread.
- `KeyCheck` (`loadshed check`): cached keys are used too; a plug that fails with a wrong key
  gets the cloud's current key (cached), and is read again with it.

Without them, `check` says which plug's key is wrong and how to get the new one. No local key
is ever logged or shown here.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Final

from loadshed.config import Config
from loadshed.devices import Registry
from loadshed.drivers.tuya import KEY_HINT, TuyaPlug
from loadshed.model import Status
from loadshed.tuyacloud import CloudError, KeyCache, TuyaCloud, in_thread

_LOG = logging.getLogger(__name__)

REFRESH_EVERY_S: Final = 24 * 3600.0  # once a day: a plug re-paired today is known by tomorrow
RETRY_EVERY_S: Final = 3600.0  # while the cloud cannot be reached (the internet is down)
SAVE_DEADLINE_S: Final = 30.0  # writing tuya-keys.json: a slow SD card, not a stuck one

KEY_CHANGED: Final = (
    "local key changed in the Tuya cloud: using the new one (cached in the state dir)"
)
PASTE_IT: Final = "config.py keeps the old one: `loadshed discover --show-keys` prints the new"
HOW_TO_GET: Final = (
    "pairing a plug again in the Smart Life app gives it a new key. Get it with `loadshed "
    "discover --show-keys` once TUYAAPIKEY, TUYAAPISECRET and TUYAAPIDEVICEID are set in "
    "config.py (loadshed then keeps it up to date by itself), or with tinytuya's wizard "
    '(python -m tinytuya wizard), and put it as "key" in TUYA_DEVICES'
)


def use_cached_keys(registry: Registry, config: Config, cache: KeyCache) -> list[str]:
    """Give the plugs the cached keys that are newer than config.py's; return their names."""
    cached = cache.load()
    for problem in cache.problems:
        _LOG.warning("%s", problem)
    return registry.use_keys(cache.keys_for(config, cached))


def start_key_refresh(
    registry: Registry, config: Config, state_dir: Path | None
) -> asyncio.Task[None] | None:
    """Use the cached keys now; refresh them from the cloud at start and once a day.

    Call it on the monitor's loop before the engine starts; cancel the task it returns (None:
    no state dir, no Tuya plug, or no cloud credentials) when the monitor stops.
    """
    if state_dir is None or not config.tuya_devices:
        return None
    cache = KeyCache(state_dir)
    try:
        use_cached_keys(registry, config, cache)
    except Exception:  # never a reason not to start: config.py's keys then
        _LOG.exception("cannot use the cached Tuya local keys; using config.py's")
    cloud = TuyaCloud.from_config(config)
    if cloud is None:
        return None
    return asyncio.create_task(keep_keys_fresh(cloud, cache, config, registry), name="tuya-keys")


async def refresh_keys(
    cloud: TuyaCloud, cache: KeyCache, config: Config, registry: Registry
) -> list[str]:
    """Ask the cloud once, keep its keys, give the plugs their current ones and read those
    again (a plug that failed on its old key is known at once, not at the next refresh);
    return the names of the plugs whose key changed. Raises CloudError."""
    devices = await cloud.fetch()
    try:
        cached = await in_thread(lambda: cache.save(devices, config), SAVE_DEADLINE_S, "tuya-keys")
    except (OSError, TimeoutError) as err:
        _LOG.warning(
            "cannot write %s (%s): the keys are used until loadshed stops", cache.path, err
        )
        cached = cache.merged(devices, config)
    changed = registry.use_keys(cache.keys_for(config, cached))
    if changed:
        await registry.read(changed)
    return changed


async def keep_keys_fresh(
    cloud: TuyaCloud,
    cache: KeyCache,
    config: Config,
    registry: Registry,
    *,
    every_s: float = REFRESH_EVERY_S,
    retry_s: float = RETRY_EVERY_S,
) -> None:
    """Refresh now, then every every_s; every retry_s while the cloud cannot be asked."""
    failing = False
    while True:
        wait_s = every_s
        try:
            await refresh_keys(cloud, cache, config, registry)
            if failing:
                _LOG.info("Tuya cloud answers again: local keys refreshed")
            else:
                _LOG.debug("local keys refreshed from the Tuya cloud")
            failing = False
        except CloudError as err:
            wait_s = retry_s
            if not failing:  # said once per outage of the cloud, not every hour
                _LOG.warning(
                    "%s; the local keys in use are kept, asking again every %g min",
                    err,
                    retry_s / 60,
                )
            failing = True
        except Exception:  # a bug here must never stop the daemon
            wait_s = retry_s
            _LOG.exception("refreshing the Tuya local keys failed; trying again later")
        await asyncio.sleep(wait_s)


class KeyCheck:
    """`loadshed check`'s side: cached keys first, then the cloud for a plug with a wrong key."""

    def __init__(self, registry: Registry, config: Config, state_dir: Path) -> None:
        self.registry = registry
        self.config = config
        self.cache = KeyCache(state_dir)
        self.notes: list[str] = []  # for the owner, under the table
        for name in use_cached_keys(registry, config, self.cache):
            self.notes.append(f"{name}: using the local key from the Tuya cloud; {PASTE_IT}")
        self.notes.extend(self.cache.problems)

    async def mend(self) -> None:
        """After the plugs were read: fetch the current key of each that failed with a wrong
        key, keep it, and read the plug again with it. Never raises."""
        try:
            await self._mend()
        except Exception:  # the table still shows what was read
            _LOG.exception("asking the Tuya cloud for the current local keys failed")
            self.notes.append("the Tuya cloud's keys could not be used (a bug): see --debug")

    async def _mend(self) -> None:
        wrong = {
            name: device
            for name, device in self.registry.devices.items()
            if isinstance(device.switch, TuyaPlug)
            and device.status is Status.FAILED
            and device.detail == KEY_HINT
        }
        if not wrong:
            return
        cloud = TuyaCloud.from_config(self.config)
        if cloud is None:
            for name, device in wrong.items():
                device.detail = f"wrong local key for {name!r} (or protocol version): {HOW_TO_GET}"
            return
        try:
            devices = await cloud.fetch()
        except CloudError as err:
            for device in wrong.values():
                device.detail = f"{KEY_HINT}; its current key could not be fetched: {err}"
            return
        try:
            cached = self.cache.save(devices, self.config)
        except OSError as err:
            self.notes.append(f"cannot write {self.cache.path} ({err}): the new keys are not kept")
            cached = self.cache.merged(devices, self.config)
        listed = {d.id for d in devices}
        current = self.cache.keys_for(self.config, cached)
        ids = {d.switch.dev_id for d in wrong.values() if isinstance(d.switch, TuyaPlug)}
        changed = set(self.registry.use_keys({i: k for i, k in current.items() if i in ids}))
        await self.registry.read(sorted(changed))
        for name, device in wrong.items():
            dev_id = device.switch.dev_id if isinstance(device.switch, TuyaPlug) else ""
            if name in changed and device.status is Status.OK:
                self.notes.append(f"{name}: {KEY_CHANGED}; {PASTE_IT}")
            elif name in changed:
                device.detail = (
                    f"the local key from the Tuya cloud fails too ({device.detail}): check "
                    '"version" in TUYA_DEVICES (3.3 or 3.4)'
                )
            elif dev_id not in listed:
                device.detail = (
                    f"{KEY_HINT}; the Tuya cloud does not list its id {dev_id}: is the plug in "
                    "the app account linked to the project?"
                )
            else:
                device.detail = (
                    "wrong protocol version, or a wrong key the Tuya cloud has too: check "
                    '"version" in TUYA_DEVICES (3.3 or 3.4)'
                )

"""The Tuya cloud client (real tinytuya.Cloud) against the loopback HTTPS stand-in, and the
local-key cache in the state dir.

tinytuya's host can be pointed at the stand-in (`urlhost`), so the real request flow and
signature are exercised; the stand-in's CA reaches `requests` through REQUESTS_CA_BUNDLE, set
for this test process only (monkeypatch) while a test talks to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from loadshed.config import Config, load_config
from loadshed.devices import Registry
from loadshed.drivers.tuya import KEY_HINT
from loadshed.model import Status
from loadshed.sim.base import Fault
from loadshed.sim.house import SimHouse
from loadshed.sim.loop import LoopThread
from loadshed.sim.tuyacloud import TuyaCloudSim, for_house, pair_again
from loadshed.tuyacloud import (
    KEYS_FILE,
    CachedKey,
    CloudDevice,
    CloudError,
    KeyCache,
    TuyaCloud,
    devices_from_cloud,
    fingerprint,
)
from loadshed.tuyakeys import keep_keys_fresh, refresh_keys
from tests.conftest import FIXTURES

SPACE_HEATER_KEY = "0123456789abcdef"


@pytest.fixture
def cloud(sim_loop: LoopThread, monkeypatch: pytest.MonkeyPatch) -> Iterator[TuyaCloudSim]:
    sim = TuyaCloudSim()
    sim.add_device("bf0000000000000000heat", "Space heater", SPACE_HEATER_KEY)
    sim.add_device("bf0000000000000000aqua", "Aquarium", "fedcba9876543210")
    sim_loop.run(sim.start())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sim.ca_file))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield sim
    sim_loop.run(sim.stop())


def client(sim: TuyaCloudSim, **changes: Any) -> TuyaCloud:
    values: dict[str, Any] = {
        "region": "us",
        "api_key": sim.api_key,
        "api_secret": sim.api_secret,
        "device_id": "bf0000000000000000heat",
        "urlhost": sim.urlhost,
        "deadline_s": 5.0,
    }
    values.update(changes)
    return TuyaCloud(**values)


def fetch_error(cloud: TuyaCloud) -> str:
    with pytest.raises(CloudError) as caught:
        asyncio.run(cloud.fetch())
    return str(caught.value)


def test_lists_ids_names_and_local_keys_through_the_real_flow(cloud: TuyaCloudSim) -> None:
    devices = asyncio.run(client(cloud).fetch())
    assert {(d.id, d.name, d.key) for d in devices} == {
        ("bf0000000000000000heat", "Space heater", SPACE_HEATER_KEY),
        ("bf0000000000000000aqua", "Aquarium", "fedcba9876543210"),
    }
    assert all(d.mac and d.category == "cz" and not d.sub for d in devices)
    # the flow LIBRARIES.md §3 recorded, each request signed as the cloud checks it
    assert [path.split("?")[0] for path in cloud.requests] == [
        "/v1.0/token",
        "/v1.0/devices/bf0000000000000000heat",
        f"/v1.0/users/{cloud.uid}/devices",
        "/v1.0/devices/factory-infos",
    ]
    assert not cloud.refused
    assert cloud.tokens_issued == 1


def test_a_recorded_cloud_record_maps_to_name_id_and_key(
    cloud: TuyaCloudSim, sim_loop: LoopThread
) -> None:
    """The stand-in serves the real record kept in the fixtures; the client maps it."""
    record = json.loads((FIXTURES / "tuya" / "cloud_v1.0_users_devices_record_cz.json").read_text())
    cloud.add_device("aaaaaaaaaaa", record["name"], "k" * 16)
    cloud.devices["aaaaaaaaaaa"] = {**record, "local_key": "k" * 16, "uid": cloud.uid}
    devices = {d.id: d for d in asyncio.run(client(cloud).fetch())}
    assert devices["aaaaaaaaaaa"] == CloudDevice(
        "aaaaaaaaaaa", "Living Room Socket", "k" * 16, devices["aaaaaaaaaaa"].mac, "cz",
        "Switch Product", sub=False,
    )  # fmt: skip
    # and the stand-in's own records have every field of the real one
    assert set(record) <= set(cloud.devices["bf0000000000000000heat"])


def test_mapping_skips_entries_without_an_id() -> None:
    listed = [{"name": "x"}, "junk", {"id": "", "key": "k"}, {"id": "bf1", "key": "k" * 16}]
    assert [d.id for d in devices_from_cloud(listed)] == ["bf1"]
    assert devices_from_cloud({"Error": "x"}) == []


def request(sim: TuyaCloudSim, path: str, **headers: str) -> dict[str, Any]:
    reply = requests.get(f"https://{sim.urlhost}{path}", headers=headers, timeout=5)
    body: dict[str, Any] = reply.json()
    return body


def signed(sim: TuyaCloudSim, path: str, *, secret: str, token: str = "", t: int = 0) -> Any:
    t_text = str(t or int(time.time() * 1000))
    string = "GET\n" + hashlib.sha256(b"").hexdigest() + "\n\n" + path
    sign = hmac.new(
        secret.encode(), (sim.api_key + token + t_text + string).encode(), hashlib.sha256
    )
    headers = {"client_id": sim.api_key, "sign": sign.hexdigest().upper(), "t": t_text}
    headers |= {"sign_method": "HMAC-SHA256"} | ({"access_token": token} if token else {})
    return request(sim, path, **headers)


def test_the_stand_in_checks_the_signature_time_client_and_token(cloud: TuyaCloudSim) -> None:
    token_path = "/v1.0/token?grant_type=1"
    good = signed(cloud, token_path, secret=cloud.api_secret)
    assert good["success"] is True
    token = good["result"]["access_token"]
    assert signed(cloud, token_path, secret="not-the-secret")["code"] == 1004
    stale = int((time.time() - 3600) * 1000)
    assert signed(cloud, token_path, secret=cloud.api_secret, t=stale)["code"] == 1013
    assert request(cloud, token_path, client_id="someone-else", t="1", sign="x")["code"] == 2009
    device = "/v1.0/devices/bf0000000000000000heat"
    assert signed(cloud, device, secret=cloud.api_secret, token=token)["success"] is True
    assert signed(cloud, device, secret=cloud.api_secret, token="forged")["code"] == 1010
    cloud.expire_tokens()
    assert signed(cloud, device, secret=cloud.api_secret, token=token)["code"] == 1010
    token = signed(cloud, token_path, secret=cloud.api_secret)["result"]["access_token"]
    stranger = "/v1.0/devices/bfnotinthisaccount"
    assert signed(cloud, stranger, secret=cloud.api_secret, token=token)["code"] == 1106


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        pytest.param({"api_secret": "s" * 32}, "TUYAAPISECRET", id="wrong-secret"),
        pytest.param({"api_key": "k" * 20}, "TUYAAPIKEY", id="wrong-key"),
        pytest.param({"device_id": "bfnothere"}, "TUYAAPIDEVICEID", id="wrong-device"),
    ],
)
def test_a_refusal_is_one_line_naming_what_to_check(
    cloud: TuyaCloudSim, changes: dict[str, str], named: str
) -> None:
    text = fetch_error(client(cloud, **changes))
    assert named in text
    assert "\n" not in text and "Traceback" not in text
    assert cloud.api_secret not in text and "s" * 32 not in text


def test_a_hung_cloud_costs_its_deadline_and_one_parked_daemon_thread(
    cloud: TuyaCloudSim, sim_loop: LoopThread
) -> None:
    sim_loop.run(cloud.set_fault(Fault.HUNG))
    started = time.monotonic()
    tuya = client(cloud, deadline_s=1.0)
    before = set(threading.enumerate())  # other tests' parked threads, if any, ending
    text = fetch_error(tuya)
    elapsed = time.monotonic() - started
    assert "no answer in 1 s" in text
    assert elapsed < 2.5, f"took {elapsed:.1f} s"
    parked = [t for t in set(threading.enumerate()) - before if t.name == "tuya-cloud"]
    assert len(parked) == 1 and parked[0].daemon  # never holds the process's exit
    assert "still no answer to the previous request" in fetch_error(tuya)
    again = [t for t in set(threading.enumerate()) - before if t.name == "tuya-cloud"]
    assert again == parked  # no second thread while the first waits


def test_an_unreachable_cloud_says_so(cloud: TuyaCloudSim, sim_loop: LoopThread) -> None:
    sim_loop.run(cloud.set_fault(Fault.DOWN))
    assert "cannot reach it" in fetch_error(client(cloud))


def test_a_certificate_not_trusted_is_refused_in_one_line(
    cloud: TuyaCloudSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    text = fetch_error(client(cloud))
    assert "certificate was refused" in text and "\n" not in text


def test_the_secret_never_reaches_a_log(
    cloud: TuyaCloudSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asyncio.run(client(cloud).fetch())
    fetch_error(client(cloud, device_id="bfnothere"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert cloud.api_secret not in logged and SPACE_HEATER_KEY not in logged


# --- the cache ---------------------------------------------------------------------------------


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse() as simulated:
        yield simulated


@pytest.fixture
def house_config(house: SimHouse, tmp_path: Path) -> Config:
    return load_config(house.write_config(tmp_path / "config.py"))


def heater(config: Config) -> str:
    return next(d.id for d in config.tuya_devices if d.name == "Space heater")


def test_the_cache_is_private_atomic_and_read_back(house_config: Config, tmp_path: Path) -> None:
    cache = KeyCache(tmp_path / "state")
    dev_id = heater(house_config)
    cache.save([CloudDevice(dev_id, "Space heater", "n" * 16)], house_config)
    path = tmp_path / "state" / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert sorted(os.listdir(tmp_path / "state")) == [KEYS_FILE]  # no temporary file left
    loaded = cache.load()
    assert loaded[dev_id].key == "n" * 16 and loaded[dev_id].name == "Space heater"
    old = next(d.key for d in house_config.tuya_devices if d.id == dev_id)
    assert loaded[dev_id].replaces == fingerprint(old)
    assert json.loads(path.read_text())["version"] == 1


def test_a_listing_that_leaves_a_device_out_keeps_its_cached_key(
    house_config: Config, tmp_path: Path
) -> None:
    cache = KeyCache(tmp_path)
    cache.save(
        [CloudDevice("bf1", "Heater", "1" * 16), CloudDevice("bf2", "Fan", "2" * 16)], house_config
    )
    kept = cache.save([CloudDevice("bf1", "Heater", "3" * 16)], house_config)
    assert {i: k.key for i, k in kept.items()} == {"bf1": "3" * 16, "bf2": "2" * 16}
    assert {i: k.key for i, k in cache.load().items()} == {"bf1": "3" * 16, "bf2": "2" * 16}


def test_a_cached_key_is_used_only_when_newer_than_config_s(
    house_config: Config, tmp_path: Path
) -> None:
    dev_id = heater(house_config)
    config_key = next(d.key for d in house_config.tuya_devices if d.id == dev_id)
    written = house_config.path.stat().st_mtime
    cache = KeyCache(tmp_path)
    newer = {dev_id: CachedKey(dev_id, "Space heater", "n" * 16, written + 60)}
    assert cache.keys_for(house_config, newer)[dev_id] == "n" * 16
    older = {dev_id: CachedKey(dev_id, "Space heater", "n" * 16, written - 60)}
    assert cache.keys_for(house_config, older)[dev_id] == config_key  # the owner pasted one
    replacing = {
        dev_id: CachedKey(dev_id, "Space heater", "n" * 16, written - 60, fingerprint(config_key))
    }
    # config.py edited since, but it still has exactly the key the cloud replaced
    assert cache.keys_for(house_config, replacing)[dev_id] == "n" * 16


def test_a_damaged_cache_is_set_aside_and_said(house_config: Config, tmp_path: Path) -> None:
    path = tmp_path / KEYS_FILE
    path.write_text("{ not json")
    cache = KeyCache(tmp_path)
    assert cache.load() == {}
    assert len(cache.problems) == 1 and "is not JSON" in cache.problems[0]
    assert [p.name for p in tmp_path.glob(f"{KEYS_FILE}.corrupt-*")] != []
    assert not path.exists()
    assert cache.load() == {} and cache.problems == []  # said once


def test_a_partly_damaged_cache_keeps_its_good_entries(tmp_path: Path) -> None:
    good = {"name": "Heater", "key": "g" * 16, "confirmed_at": 1.0, "replaces": ""}
    doc = {"version": 1, "devices": {"bf1": good, "bf2": {"key": 5}, "bf3": "junk"}}
    (tmp_path / KEYS_FILE).write_text(json.dumps(doc))
    cache = KeyCache(tmp_path)
    assert list(cache.load()) == ["bf1"]
    assert "2 bad entries" in cache.problems[0]
    assert list(KeyCache(tmp_path).load()) == ["bf1"]  # written back whole


def test_a_cache_from_a_newer_loadshed_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_text(json.dumps({"version": 9, "devices": {}}))
    cache = KeyCache(tmp_path)
    assert cache.load() == {} and "newer loadshed" in cache.problems[0]
    assert (tmp_path / KEYS_FILE).exists()


# --- the keys put to use -----------------------------------------------------------------------


def read_heater(registry: Registry) -> Status | None:
    async def go() -> Status | None:
        try:
            await registry.read(["Space heater"])
            return registry.devices["Space heater"].status
        finally:
            await registry.close()

    return asyncio.run(go())


def test_a_re_paired_plug_works_again_with_the_cloud_s_key_and_the_log_names_only_the_plug(
    house: SimHouse,
    house_config: Config,
    sim_loop: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    cloud = for_house(house)
    sim_loop.run(cloud.start())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.ca_file))
    try:
        new_key = pair_again(house, cloud, "Space heater")
        registry = Registry(house_config, timeout_s=3)
        asyncio.run(registry.read(["Space heater"]))
        assert registry.devices["Space heater"].detail == KEY_HINT
        cache = KeyCache(tmp_path / "state")
        tuya = client(cloud, device_id=house.tuya[0].dev_id)
        changed = asyncio.run(refresh_keys(tuya, cache, house_config, registry))
        assert changed == ["Space heater"]
        assert read_heater(registry) is Status.OK
        assert cache.load()[heater(house_config)].key == new_key
        said = [r.getMessage() for r in caplog.records if r.name == "loadshed.devices"]
        assert said == [
            "Space heater: using the local key fetched from the Tuya cloud (cached in the state "
            "dir), not the older one in config.py"
        ]
        assert all(new_key not in r.getMessage() for r in caplog.records)
    finally:
        sim_loop.run(cloud.stop())


def test_a_hung_cloud_never_holds_the_loop_and_is_said_once(
    house: SimHouse,
    house_config: Config,
    cloud: TuyaCloudSim,
    sim_loop: LoopThread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim_loop.run(cloud.set_fault(Fault.HUNG))
    registry = Registry(house_config, timeout_s=3)

    async def go() -> float:
        refresher = asyncio.create_task(
            keep_keys_fresh(
                client(cloud, deadline_s=0.5),
                KeyCache(tmp_path),
                house_config,
                registry,
                retry_s=0.2,
            )
        )
        started = time.monotonic()
        late = 0.0
        for _ in range(20):  # the loop keeps its ticks while the cloud hangs
            before = time.monotonic()
            await asyncio.sleep(0.05)
            late = max(late, time.monotonic() - before - 0.05)
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        await registry.close()
        assert time.monotonic() - started < 3
        return late

    assert asyncio.run(go()) < 0.2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "no answer in 0.5 s" in w]) == 1

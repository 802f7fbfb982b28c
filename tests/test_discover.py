"""`loadshed discover` against the simulated house and the loopback Tuya cloud stand-in.

Only 127.0.0.0/8 is ever reached. Kasa: every test aims discovery with --target at the house's
loopback plugs (never a broadcast). Tuya on the LAN: the CLI tests turn the listen off
(LOADSHED_TUYA_LISTEN=off), since it binds every interface and sends tinytuya's broadcast
request; `listen_for_tuya` is tested on loopback ports, fed datagrams built here from the
protocol (not with tinytuya), with no request sent.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import io
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from loadshed import cli
from loadshed.config import load_config, parse_host_port
from loadshed.discover import Findings, Heard, Listen, find, listen_for_tuya, render
from loadshed.sim.base import Fault
from loadshed.sim.house import SimHouse
from loadshed.sim.loop import LoopThread
from loadshed.sim.tuyacloud import TuyaCloudSim, for_house, pair_again
from loadshed.tuyacloud import CloudDevice, TuyaCloud

UDP_KEY = hashlib.md5(b"yGAdlopoPVldABfn").digest()  # every Tuya device's broadcast key


@pytest.fixture
def house() -> Iterator[SimHouse]:
    with SimHouse() as simulated:
        yield simulated


@pytest.fixture
def cloud(
    house: SimHouse, sim_loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TuyaCloudSim]:
    sim = for_house(house, extra=[("Garage fan", "cz"), ("Hall sensor", "wsdcg")])
    sim_loop.run(sim.start())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(sim.ca_file))  # this process only
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield sim
    sim_loop.run(sim.stop())


@pytest.fixture
def config(house: SimHouse, cloud: TuyaCloudSim, tmp_path: Path) -> Path:
    path = house.write_config(tmp_path / "config.py")
    with path.open("a") as f:
        f.write(
            f"TUYAAPIKEY = {cloud.api_key!r}\nTUYAAPISECRET = {cloud.api_secret!r}\n"
            f"TUYAAPIDEVICEID = {house.tuya[0].dev_id!r}\n"
        )
    return path


def discover(*args: str, cloud: TuyaCloudSim | None = None) -> tuple[int, str, str]:
    env = {"LOADSHED_TUYA_LISTEN": "off"}
    if cloud is not None:
        env["LOADSHED_TUYA_CLOUD_HOST"] = cloud.urlhost
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["discover", *args], env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def targets(house: SimHouse) -> list[str]:
    return [arg for sim in house.kasa for arg in ("--target", sim.address)]


def line_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(start))


def pasted(text: str) -> str:
    """The lines offered for config.py."""
    block = text.split("in place of the lines there:\n", 1)[1]
    return block.split("\nWhere it looked:", 1)[0]


def test_finds_the_house_marks_what_config_has_and_hides_keys(
    house: SimHouse, cloud: TuyaCloudSim, config: Path
) -> None:
    started = time.monotonic()
    code, out, err = discover("--config", str(config), *targets(house), cloud=cloud)
    assert code == 0, out + err
    assert time.monotonic() - started < 15
    for name in ("Router", "Freezer", "Office strip", "TV"):
        assert line_of(out, name).endswith("in config.py") or "in config.py;" in line_of(out, name)
    assert "outlets: Monitor, Printer, Desk lamp" in line_of(out, "Office strip")
    assert "KLAP" in line_of(out, "TV")  # no discovery answer: reached as `run` reaches it
    for spec in house.tuya:
        assert spec.dev_id in line_of(out, spec.name) and "in config.py" in line_of(out, spec.name)
    assert "new" in line_of(out, "Garage fan")
    assert "not a plug or switch" in line_of(out, "Hall sensor")
    assert "key: hidden, add --show-keys" in line_of(out, "Space heater")
    for key in (*(t.key for t in house.tuya), *(d["local_key"] for d in cloud.devices.values())):
        assert key not in out + err
    assert cloud.api_secret not in out + err
    paste = pasted(out)
    assert "KASA_HOSTS = " in paste and '"key": "<hidden: add --show-keys>"' in paste
    assert line_of(paste, '# {"name": "Garage fan"')  # no IP known: offered commented out
    assert "Tuya on the LAN: not listened" in out
    assert f"Tuya cloud (us, {cloud.urlhost}): 5 devices" in out


def test_show_keys_prints_lines_that_make_a_valid_config(
    house: SimHouse, cloud: TuyaCloudSim, config: Path, tmp_path: Path
) -> None:
    code, out, _ = discover("--config", str(config), *targets(house), "--show-keys", cloud=cloud)
    assert code == 0
    for spec in house.tuya:
        assert f"key: {spec.key}" in line_of(out, spec.name)
    fresh = tmp_path / "fresh" / "config.py"
    fresh.parent.mkdir()
    fresh.write_text(f"PWIPNAME = {house.powerwall.address!r}\nPWPASS = 'x'\n" + pasted(out))
    fresh.chmod(0o600)
    loaded = load_config(fresh)
    assert {(d.name, d.id, d.key) for d in loaded.tuya_devices} == {
        (t.name, t.dev_id, t.key) for t in house.tuya
    }
    assert {str(h) for h in loaded.kasa_hosts} == {sim.address for sim in house.kasa}


def test_a_re_paired_plug_is_marked_and_its_new_key_offered(
    house: SimHouse, cloud: TuyaCloudSim, config: Path
) -> None:
    new_key = pair_again(house, cloud, "Aquarium")
    router = ("--target", house.kasa[0].address)
    code, out, _ = discover("--config", str(config), *router, "--show-keys", cloud=cloud)
    assert code == 0
    assert "its local key changed: config.py has an old one" in line_of(out, "Aquarium")
    assert f'"key": "{new_key}"' in line_of(pasted(out), '{"name": "Aquarium"')


def test_nothing_found_is_exit_0_and_says_where_it_looked(tmp_path: Path) -> None:
    code, out, err = discover(
        "--config", str(tmp_path / "none.py"), "--target", "127.0.0.1:1"
    )  # fmt: skip
    assert code == 0, err
    assert "Nothing found." in out
    assert "no config at" in out
    looked = out.split("Where it looked:\n", 1)[1]
    assert "Kasa: asked 127.0.0.1:1 (--target): 0 answered" in looked
    assert "Tuya on the LAN: not listened" in looked
    assert "Tuya cloud: not asked (no config.py)" in looked
    assert "not found at 127.0.0.1:1" in out


def test_without_cloud_credentials_it_says_how_to_set_them(house: SimHouse, tmp_path: Path) -> None:
    config = house.write_config(tmp_path / "config.py")
    code, out, _ = discover("--config", str(config), "--target", house.kasa[0].address)
    assert code == 0
    assert "Tuya cloud: not asked (set TUYAAPIKEY, TUYAAPISECRET and TUYAAPIDEVICEID" in out
    # the configured plugs are still offered, keys hidden
    assert '{"name": "Space heater"' in pasted(out) and house.tuya[0].key not in out


def test_a_bad_target_is_exit_2(tmp_path: Path) -> None:
    code, _, err = discover("--config", str(tmp_path / "none.py"), "--target", "no such:host")
    assert code == 2 and "--target" in err


def test_a_hung_cloud_is_bounded_and_said(
    house: SimHouse, cloud: TuyaCloudSim, config: Path, sim_loop: LoopThread
) -> None:
    sim_loop.run(cloud.set_fault(Fault.HUNG))
    loaded = load_config(config)
    tuya = TuyaCloud.from_config(loaded, {"LOADSHED_TUYA_CLOUD_HOST": cloud.urlhost}, deadline_s=1)
    started = time.monotonic()
    router = parse_host_port(house.kasa[0].address)  # Kasa aimed at one plug: never a broadcast
    findings = asyncio.run(find(loaded, [router], None, tuya))
    assert time.monotonic() - started < 3
    assert findings.cloud is None and "no answer in 1 s" in findings.looked["cloud"]


# --- Tuya broadcasts on the LAN, fed on loopback -----------------------------------------------


def frame(cmd: int, payload: bytes) -> bytes:
    """A 55AA frame as a plug broadcasts it: header, return code, payload, CRC, suffix."""
    body = struct.pack(">I", 0) + payload
    head = struct.pack(">4I", 0x000055AA, 0, cmd, len(body) + 8)
    crc = binascii.crc32(head + body) & 0xFFFFFFFF
    return head + body + struct.pack(">2I", crc, 0x0000AA55)


def encrypted(doc: dict[str, object]) -> bytes:
    padder = padding.PKCS7(128).padder()
    plain = padder.update(json.dumps(doc).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(UDP_KEY), modes.ECB()).encryptor()
    return encryptor.update(plain) + encryptor.finalize()


def test_the_listen_hears_3_1_and_3_3_broadcasts_and_ignores_garbage() -> None:
    import socket

    def send(bound: list[tuple[str, int]]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            clear = {"ip": "192.0.2.31", "gwId": "bf31", "active": 2, "version": "3.1"}
            sock.sendto(frame(0x12, json.dumps(clear).encode()), bound[0])
            secret = {"ip": "192.0.2.33", "gwId": "bf33", "productKey": "k", "version": "3.3"}
            sock.sendto(frame(0x13, encrypted(secret)), bound[1])
            sock.sendto(b"not a tuya frame", bound[1])
            sock.sendto(frame(0x13, b"\x00" * 16), bound[1])

    listen = Listen(host="127.0.0.1", ports=(0, 0), seconds=0.5, solicit=False, on_ready=send)
    heard, problems = asyncio.run(listen_for_tuya(listen))
    assert problems == []
    assert heard == {
        "bf31": Heard("bf31", "192.0.2.31", 3.1),
        "bf33": Heard("bf33", "192.0.2.33", 3.3),
    }


def test_a_plug_heard_on_the_lan_gets_its_ip_and_version_in_the_paste(
    house: SimHouse, config: Path
) -> None:
    fan, lamp = "bf" + "7" * 18, "bf" + "8" * 18
    findings = Findings(
        heard={
            fan: Heard(fan, "192.0.2.77", 3.4),
            lamp: Heard(lamp, "192.0.2.88", 3.3),
        },
        cloud=[CloudDevice(fan, "Garage fan", "f" * 16, category="cz")],
    )
    text = render(findings, load_config(config), show_keys=True)
    fan_line = line_of(pasted(text), '{"name": "Garage fan"')  # IP, version and key known
    assert '"ip": "192.0.2.77"' in fan_line and '"version": 3.4' in fan_line
    assert '"key": "ffffffffffffffff"' in fan_line
    lamp_line = line_of(pasted(text), '# {"name": "Tuya 888888"')  # no key: commented out
    assert '"ip": "192.0.2.88"' in lamp_line and "local key unknown" in lamp_line

"""The simulated TEDAPI gateway, read by pypowerwall's own TEDAPI client as shipped.

These check that the simulator answers as a gateway does (the DIN, the status, config and
firmware protobufs, basic auth, v1r signatures, the faults); tests/drivers/test_tedapi.py
checks loadshed's driver against it.

pypowerwall's untouched sessions trust the environment: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE
(set on many machines, this one included) replace its verify=False, so every self-signed
gateway is refused after 30 s of retries. The `plain_env` fixture clears them for these tests;
loadshed's driver clears them for its own sessions (tests/drivers/test_tedapi.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf.message import DecodeError
from pypowerwall import Powerwall
from pypowerwall.tedapi import TEDAPI
from pypowerwall.tedapi.protobuf.V2024_06 import tedapi_pb2
from pypowerwall.tedapi.pypowerwall_tedapi import PyPowerwallTEDAPI

from loadshed.sim.base import Fault, SiteState
from loadshed.sim.loop import LoopThread
from loadshed.sim.tedapi import (
    DEFAULT_DIN,
    FIRMWARE_VERSION,
    GARBAGE,
    GRID_CONNECTED,
    GRID_ISLANDED,
    TedapiSim,
)

PASSWORD: Final = "gw-Secret-QRSTU"  # the QR sticker's password; the customer one is "QRSTU"
WRONG_PASSWORD: Final = "gw-Secret-WRONG"
ISLANDED: Final = (
    "SystemIslandedActive",
    "SystemIslandedReady",
    "SystemWaitForUser",
    "SystemTransitionToIsland",
    "SystemTransitionToGrid",
    "SystemMicroGridFaulted",
)
QUICK_S: Final = 0.3  # a client timeout where a hang is expected

pytestmark = [
    pytest.mark.timeout(60),
    # pytest restores the warning filters pypowerwall's import turned off (disable_warnings)
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


@pytest.fixture(autouse=True)
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """pypowerwall's own sessions would verify the sim's certificate against these."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def site() -> SiteState:
    return SiteState(battery_pct=62.5, load_w=1_250.0, solar_w=640.0, site_w=610.0)


@pytest.fixture
def sim(sim_loop: LoopThread, site: SiteState) -> Iterator[TedapiSim]:
    sim = TedapiSim(site, PASSWORD)
    sim_loop.run(sim.start())
    yield sim
    sim_loop.run(sim.stop())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def client(sim: TedapiSim, gw_pwd: str = PASSWORD, **options: Any) -> Any:
    """pypowerwall's TEDAPI client, without its cache (pwcacheexpire 0)."""
    options.setdefault("timeout", 5)
    return TEDAPI(gw_pwd, host=sim.endpoint, pwcacheexpire=0, pwconfigexpire=0, **options)


def v1r_client(sim: TedapiSim, key: rsa.RSAPrivateKey, tmp_path: Path, password: str) -> Any:
    path = tmp_path / "tedapi_rsa_private.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return client(sim, "", v1r=True, password=password[-5:], rsa_key_path=str(path))


def plain_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = False
    return session


def test_refuses_to_bind_outside_loopback(site: SiteState) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        TedapiSim(site, PASSWORD, host="192.0.2.50")


def test_library_reads_din_status_config_and_firmware(sim: TedapiSim) -> None:
    tedapi = client(sim)
    assert tedapi.din == DEFAULT_DIN
    status = tedapi.get_status()
    grid = status["esCan"]["bus"]["ISLANDER"]["ISLAND_GridConnection"]["ISLAND_GridConnected"]
    assert grid == GRID_CONNECTED
    assert tedapi.battery_level() == 62.5
    assert tedapi.current_power("LOAD") == 1_250.0
    assert tedapi.current_power("SOLAR") == 640.0
    assert tedapi.current_power("SITE") == 610.0
    assert tedapi.get_config()["site_info"]["site_name"] == "loadshed simulated house"
    assert tedapi.get_firmware_version() == FIRMWARE_VERSION
    assert sim.queries == {"status": 5, "config": 1, "firmware": 1}
    # Connecting: pypowerwall's Powerwall 3 probe (GET /, answered 404) and the DIN; then one
    # POST per query.
    assert sim.requests == {"GET /": 1, "GET /tedapi/din": 1, "POST /tedapi/v1": 7}
    assert tedapi.pw3


@pytest.mark.parametrize("grid_status", ISLANDED)
def test_islanded_sites_read_as_islanded(sim: TedapiSim, site: SiteState, grid_status: str) -> None:
    site.grid_status = grid_status
    backend = PyPowerwallTEDAPI(PASSWORD, host=sim.endpoint, pwcacheexpire=0)
    status = backend.tedapi.get_status()
    grid = status["esCan"]["bus"]["ISLANDER"]["ISLAND_GridConnection"]["ISLAND_GridConnected"]
    assert grid == GRID_ISLANDED
    assert "SystemConnectedToGrid" not in status["control"]["alerts"]["active"]
    assert backend.poll("/api/system_status/grid_status")["grid_status"] == "SystemIslandedActive"


def test_each_status_is_made_from_the_site_at_that_request(sim: TedapiSim, site: SiteState) -> None:
    backend = PyPowerwallTEDAPI(PASSWORD, host=sim.endpoint, pwcacheexpire=0)
    assert backend.poll("/api/system_status/grid_status")["grid_status"] == "SystemGridConnected"
    site.grid_status = "SystemIslandedActive"
    site.battery_pct = 41.0
    site.load_w = 300.0
    assert backend.poll("/api/system_status/grid_status")["grid_status"] == "SystemIslandedActive"
    assert backend.poll("/api/system_status/soe") == {"percentage": 41.0}
    assert backend.tedapi.current_power("LOAD") == 300.0
    site.grid_status = "SystemGridConnected"
    assert backend.poll("/api/system_status/grid_status")["grid_status"] == "SystemGridConnected"


def test_the_library_facade_in_tedapi_mode(sim: TedapiSim, tmp_path: Path) -> None:
    """pypowerwall.Powerwall(host, gw_pwd=...) without a customer password is TEDAPI mode."""
    pw = Powerwall(
        sim.endpoint,
        gw_pwd=PASSWORD,
        pwcacheexpire=0,
        failover=False,  # never fall over to Tesla's cloud
        cachefile=str(tmp_path / ".powerwall"),
    )
    assert pw.tedapi_mode == "full"
    assert pw.grid_status() == "UP"
    assert pw.level() == 62.5
    assert pw.din() == DEFAULT_DIN
    sim.site.grid_status = "SystemIslandedActive"
    assert pw.grid_status() == "DOWN"


def test_status_text_is_served_verbatim(sim: TedapiSim) -> None:
    sim.status_text = json.dumps({"control": {"alerts": {"active": []}}})
    backend = PyPowerwallTEDAPI(PASSWORD, host=sim.endpoint, pwcacheexpire=0)
    assert backend.tedapi.get_status() == {"control": {"alerts": {"active": []}}}
    assert backend.poll("/api/system_status/grid_status") is None  # no grid path: no status


# --- basic auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "status"),
    [
        pytest.param(None, 401, id="none"),
        pytest.param(("Tesla_Energy_Device", WRONG_PASSWORD), 401, id="wrong-password"),
        pytest.param(("customer", PASSWORD), 401, id="wrong-user"),
        pytest.param(("Tesla_Energy_Device", PASSWORD), 200, id="right"),
    ],
)
def test_din_needs_the_gateway_password(
    sim: TedapiSim, auth: tuple[str, str] | None, status: int
) -> None:
    with plain_session() as session:
        reply = session.get(f"https://{sim.endpoint}/tedapi/din", auth=auth, timeout=5)
    assert reply.status_code == status
    assert (reply.text == DEFAULT_DIN) is (status == 200)
    assert sim.failed_logins == (status == 401)
    assert PASSWORD not in reply.text


def test_library_with_a_wrong_password_gets_nothing(sim: TedapiSim) -> None:
    tedapi = client(sim, WRONG_PASSWORD)
    assert tedapi.din is None
    assert tedapi.get_status() is None  # it tries to connect again, and is refused again
    assert sim.failed_logins == 2
    assert sim.requests["POST /tedapi/v1"] == 0


def test_bad_auth_refuses_the_right_password(sim_loop: LoopThread, sim: TedapiSim) -> None:
    sim_loop.run(sim.set_fault(Fault.BAD_AUTH))
    assert client(sim).din is None
    sim_loop.run(sim.set_fault(Fault.NONE))
    assert client(sim).din == DEFAULT_DIN


# --- faults and switches ------------------------------------------------------------------


def test_garbage_is_no_protobuf_and_the_library_gets_nothing(sim: TedapiSim) -> None:
    tedapi = client(sim)
    sim.garbage = True
    with pytest.raises(DecodeError):
        tedapi_pb2.Message().ParseFromString(GARBAGE)
    with pytest.raises(UnicodeDecodeError):
        GARBAGE.decode()
    assert tedapi.get_status() is None
    assert sim.requests["POST /tedapi/v1"] == 1  # answered 200, with garbage
    sim.garbage = False
    assert tedapi.get_status() is not None


def test_rate_limited_puts_the_library_in_its_cooldown(sim: TedapiSim) -> None:
    tedapi = client(sim)
    sim.rate_limited = True
    assert tedapi.get_status() is None
    sim.rate_limited = False
    assert tedapi.get_status() is None  # pypowerwall's 5-minute pause: nothing sent
    assert sim.requests["POST /tedapi/v1"] == 1


@pytest.mark.timeout(20)
def test_hung_accepts_and_never_answers(sim_loop: LoopThread, sim: TedapiSim) -> None:
    sim_loop.run(sim.set_fault(Fault.HUNG))
    with plain_session() as session, pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"https://{sim.endpoint}/tedapi/din", timeout=QUICK_S)
    assert sim.requests["GET /tedapi/din"] == 1


def test_down_refuses_connections_and_comes_back_on_its_port(
    sim_loop: LoopThread, sim: TedapiSim
) -> None:
    port = sim.port
    sim_loop.run(sim.set_fault(Fault.DOWN))
    with plain_session() as session, pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"https://{sim.endpoint}/tedapi/din", timeout=5)
    sim_loop.run(sim.set_fault(Fault.NONE))
    assert sim.port == port
    assert client(sim).din == DEFAULT_DIN


# --- v1r: the wired LAN, RSA-signed ---------------------------------------------------------


def test_v1r_with_a_registered_key_reads_status_and_config(
    sim: TedapiSim, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    sim.register_key(rsa_key.public_key())
    tedapi = v1r_client(sim, rsa_key, tmp_path, PASSWORD)
    assert tedapi.din == DEFAULT_DIN
    assert tedapi.battery_level() == 62.5
    assert tedapi.get_config()["vin"] == DEFAULT_DIN
    # Login, DIN, the connect's config probe; then one signed POST per query.
    assert sim.requests == {"POST /api/login/Basic": 1, "GET /tedapi/din": 1, "POST /tedapi/v1r": 3}
    assert sim.queries == {"config": 2, "status": 1}


def test_v1r_refuses_an_unknown_key_an_unverified_key_and_a_wrong_password(
    sim: TedapiSim, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    with pytest.warns(UserWarning, match="UNKNOWN_KEY_ID"):
        unknown = v1r_client(sim, rsa_key, tmp_path, PASSWORD)
    assert unknown.v1r_transport.key_unknown
    assert unknown.get_status() is None
    sim.register_key(rsa_key.public_key())
    sim.key_verified = False
    with pytest.warns(UserWarning, match="PENDING_VERIFICATION"):
        assert v1r_client(sim, rsa_key, tmp_path, PASSWORD).get_status() is None
    before = sim.failed_logins
    assert v1r_client(sim, rsa_key, tmp_path, WRONG_PASSWORD).din is None
    assert sim.failed_logins == before + 1
    assert sim.queries["status"] == 0

"""The phone page's server: who may command (401, 403, 405), what every answer says about
itself (CSP and friends), that the token is compared in constant time and never sent back, the
page's words for the house (pure), and WEB_LISTEN / WEB_TOKEN in config.py.

The page's script in a real browser is tested end to end (tests/e2e/test_web.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from loadshed.config import HostPort, load_config
from loadshed.control import command_of
from loadshed.engine import Command, CommandKind, DeviceRow, Snapshot, SourceRow
from loadshed.errors import ConfigError
from loadshed.model import Action, Grid, GridReading, Kind, Outcome, Pin, Power, Status, Verb
from loadshed.web import (
    COMMANDS_OFF,
    PAGE,
    WebServer,
    command_doc,
    status_doc,
)
from loadshed.wire import encode

TOKEN = "the-right-token-0123456789"
NOW = time.mktime((2024, 1, 15, 14, 30, 0, 0, 0, -1))  # 14:30 local time
MIN = 60.0


def row(name: str, rule: int = 100, power: Power | None = Power.ON, **kw: Any) -> DeviceRow:
    return DeviceRow(
        name, kw.pop("kind", Kind.KASA), "192.0.2.9:9999", rule, power, Status.OK, **kw
    )


HOUSE = (row("Router", 0), row("Freezer", 30, watts=150.0), row("TV", watts=110.0))


def snapshot(grid: Grid = Grid.ON, **kw: Any) -> Snapshot:
    raw = "SystemGridConnected" if grid is Grid.ON else "SystemIslandedActive"
    values: dict[str, Any] = {
        "taken_at": NOW,
        "reading": GridReading(grid, raw, 54.0, 2700.0, 0.0),
        "devices": HOUSE,
        "grid_since": NOW - 30 * MIN,
        "started": True,
        "events": ("14:00 ready: 3 devices (1 essential), on grid, battery 54 %",),
    }
    values.update(kw)
    return Snapshot(**values)


class FakeEngine:
    """What the server uses of an Engine: its snapshot, device names, obey and listeners.
    Each command asks to switch TV, whose outcome comes on the next turn of the loop."""

    def __init__(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.registry = SimpleNamespace(devices={"TV": None, "Freezer": None})
        self.result_listeners: set[Callable[[Action, Outcome], None]] = set()
        self.obeyed: list[Command] = []

    def obey(self, command: Command) -> tuple[Action, ...]:
        self.obeyed.append(command)
        action = Action(Verb.SHED, "TV", f"forced from {command.origin}")

        def done() -> None:
            for listener in list(self.result_listeners):
                listener(action, Outcome.ok(Power.OFF))

        asyncio.get_running_loop().call_soon(done)
        return (action,)


Client = TestClient  # type: ignore[type-arg]


def serve(
    test: Callable[[Client, FakeEngine], Awaitable[None]],
    token: str = TOKEN,
    snap: Snapshot | None = None,
) -> FakeEngine:
    """Run test against the page's app on 127.0.0.1 (aiohttp's test server), with a fake engine."""
    engine = FakeEngine(snap or snapshot())

    async def main() -> None:
        server = WebServer(engine, HostPort("127.0.0.1", 0), token)  # type: ignore[arg-type]
        async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
            await test(client, engine)

    asyncio.run(main())
    return engine


BEARER = {"Authorization": f"Bearer {TOKEN}"}
PIN_TV = {"device": "TV", "pin": "on"}


# --- who may command --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/shed", "/api/restore", "/api/pin"])
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer nope"}, id="wrong-token"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="longer-token"),
        pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="shorter-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="not-bearer"),
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
        pytest.param({"Cookie": f"token={TOKEN}"}, id="a-cookie-is-not-a-token"),
    ],
)
def test_a_command_without_the_token_is_401_and_does_nothing(
    path: str, headers: dict[str, str]
) -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.post(path, json=PIN_TV, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="loadshed"'
        doc = await response.json()
        assert doc["ok"] is False and "wrong or missing token" in doc["error"]

    assert serve(test).obeyed == []


@pytest.mark.parametrize("path", ["/api/shed", "/api/restore", "/api/pin"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer anything-at-all-here"}])
def test_with_no_token_configured_every_command_is_403(path: str, headers: dict[str, str]) -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.post(path, json=PIN_TV, headers=headers)
        assert response.status == 403
        assert (await response.json())["error"] == COMMANDS_OFF
        assert "commands are off: set WEB_TOKEN" in COMMANDS_OFF
        status = await (await client.get("/api/status")).json()
        assert status["commands"] is False

    assert serve(test, token="").obeyed == []


@pytest.mark.parametrize("path", ["/api/shed", "/api/restore", "/api/pin"])
def test_a_command_path_takes_post_only(path: str) -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, path, headers=BEARER)
            assert response.status == 405, method
            assert response.headers["Allow"] == "POST"
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")

    assert serve(test).obeyed == []


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    async def test(client: Client, engine: FakeEngine) -> None:
        assert (await client.post("/api/shed", headers={"Authorization": "Bearer x"})).status == 401
        assert (await client.post("/api/shed")).status == 401  # compared even with none sent
        assert (await client.post("/api/shed", headers=BEARER)).status == 200

    serve(test)
    assert compared == [(b"x", TOKEN.encode()), (b"", TOKEN.encode()), (TOKEN.encode(),) * 2]


def test_refusals_are_logged_with_the_sender_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        for _ in range(3):
            assert (
                await client.post("/api/shed", headers={"Authorization": "Bearer x"})
            ).status == 401

    with caplog.at_level(logging.WARNING, logger="loadshed.web"):
        serve(test)
    assert [r.getMessage() for r in caplog.records] == [
        "phone page: refused 1 command from 127.0.0.1 without the right token"
    ]


def test_a_non_ascii_token_attempt_is_a_plain_401() -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        headers = {"Authorization": "Bearer t\u00e9l\u00e9phone"}
        assert (await client.post("/api/shed", headers=headers)).status == 401

    serve(test)


# --- commands with the token ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind", "summary"),
    [
        ("/api/shed", CommandKind.FORCE_SHED, "Shed: 1 device"),
        ("/api/restore", CommandKind.FORCE_RESTORE, "Restore: 1 device"),
    ],
)
def test_shed_and_restore_run_on_the_engine_and_answer_each_outcome(
    path: str, kind: CommandKind, summary: str
) -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.post(path, headers=BEARER)
        assert response.status == 200
        assert await response.json() == {"ok": True, "summary": summary, "lines": ["TV: off"]}
        assert engine.result_listeners == set()  # the listener is gone once answered

    engine = serve(test)
    assert engine.obeyed == [Command(kind, origin="the phone page")]


def test_a_pin_names_a_device_and_how() -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.post("/api/pin", json=PIN_TV, headers=BEARER)
        assert response.status == 200
        doc = await response.json()
        assert doc["summary"] == "TV: keep on" and doc["lines"] == ["TV: off"]
        response = await client.post(
            "/api/pin", json={"device": "Freezer", "pin": "auto"}, headers=BEARER
        )
        assert (await response.json())["summary"] == "Freezer: automatic"

    engine = serve(test)
    assert engine.obeyed == [
        Command(CommandKind.PIN, origin="the phone page", device="TV", pin=Pin.ON),
        Command(CommandKind.PIN, origin="the phone page", device="Freezer", pin=None),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"not json", "send JSON", id="not-json"),
        pytest.param(b"[1, 2]", "a JSON object", id="not-an-object"),
        pytest.param(b'{"device": "TV", "pin": "maybe"}', '"on", "off" or "auto"', id="bad-pin"),
        pytest.param(b'{"pin": "on"}', '"device" (a name)', id="no-device"),
        pytest.param(b'{"device": "Toaster", "pin": "on"}', "no device called", id="unknown"),
    ],
)
def test_a_bad_pin_is_400_saying_what_is_expected(body: bytes, expected: str) -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.post("/api/pin", data=body, headers=BEARER)
        assert response.status == 400
        assert expected in (await response.json())["error"]

    assert serve(test).obeyed == []


def test_a_huge_body_is_refused() -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.post("/api/pin", data=b"x" * 100_000, headers=BEARER)
        assert response.status == 413

    assert serve(test).obeyed == []


def test_command_doc_says_failures_and_devices_still_switching() -> None:
    messages = [
        {"type": "accepted", "actions": [{}, {}, {}]},
        {
            "type": "outcome",
            "action": encode(Action(Verb.SHED, "TV", "x")),
            "outcome": encode(Outcome.ok(Power.OFF)),
        },
        {
            "type": "outcome",
            "action": encode(Action(Verb.SHED, "Heater", "x")),
            "outcome": encode(Outcome.unreachable("no answer in 5 s")),
        },
        {"type": "done", "waiting": ["NAS"]},
    ]
    assert command_doc("Shed", messages, counted=True) == {
        "ok": False,
        "summary": "Shed: 3 devices, not all done",
        "lines": [
            "TV: off",
            "Heater: FAILED: no answer in 5 s",
            "NAS: still switching (the list above follows it)",
        ],
    }
    nothing = [{"type": "accepted", "actions": []}, {"type": "done", "waiting": []}]
    assert command_doc("Restore", nothing, counted=True)["summary"] == "Restore: nothing to switch"


def test_command_of_is_shared_with_the_control_socket() -> None:
    assert command_of("shed", None, None, origin="o") == Command(CommandKind.FORCE_SHED, "o")
    assert command_of("pin", "TV", "off", origin="o").pin is Pin.OFF
    with pytest.raises(ValueError, match="unknown command"):
        command_of("reboot", None, None, origin="o")
    with pytest.raises(ValueError, match="pin needs"):
        command_of("pin", "TV", ["on"], origin="o")


# --- what every answer says -------------------------------------------------------------------


def test_every_answer_forbids_outside_sources_sniffing_referrers_framing_and_caching() -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        answers = [
            await client.get("/"),
            await client.get("/api/status"),
            await client.post("/api/shed"),
            await client.post("/api/shed", headers=BEARER),
            await client.get("/api/shed"),
            await client.get("/nowhere"),
        ]
        for response in answers:
            headers = response.headers
            csp = headers["Content-Security-Policy"]
            assert csp.startswith("default-src 'none';")
            assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert not re.search(r"https?:|\*|unsafe", csp), csp
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cache-Control"] == "no-store"
            assert "Access-Control-Allow-Origin" not in headers
        options = await client.options("/api/shed", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in options.headers

    serve(test)


def test_the_page_is_self_contained_and_its_script_and_style_are_allowed_by_hash() -> None:
    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.get("/")
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
        assert page.encode() == PAGE
        assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing loaded from anywhere
        assert "http://" not in page and "https://" not in page and "@import" not in page
        csp = response.headers["Content-Security-Policy"]
        for tag in ("script", "style"):
            (inline,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
            digest = b64encode(hashlib.sha256(inline.encode()).digest()).decode()
            assert f"{tag}-src 'sha256-{digest}'" in csp
        assert "innerHTML" not in page  # device names go in as text, never as markup

    serve(test)


def test_no_secret_in_any_answer() -> None:
    seen: list[str] = []

    async def test(client: Client, engine: FakeEngine) -> None:
        for response in (
            await client.get("/"),
            await client.get("/api/status"),
            await client.post("/api/shed", headers=BEARER),
            await client.post("/api/pin", json=PIN_TV, headers=BEARER),
            await client.post("/api/restore", headers={"Authorization": "Bearer wrong"}),
        ):
            seen.append(await response.text())
            seen.append(str(dict(response.headers)))

    serve(test)
    assert seen and not any(TOKEN in text for text in seen)


def test_status_is_the_snapshot_and_the_page_s_words() -> None:
    snap = snapshot()

    async def test(client: Client, engine: FakeEngine) -> None:
        response = await client.get("/api/status")
        assert response.status == 200 and response.content_type == "application/json"
        doc = await response.json()
        assert doc["snapshot"] == encode(snap)
        assert doc["commands"] is True
        assert doc["view"]["grid"]["head"] == "ON GRID"

    serve(test, snap=snap)


def test_the_server_listens_and_a_taken_port_is_an_oserror() -> None:
    async def main() -> None:
        engine = FakeEngine(snapshot())
        first = WebServer(engine, HostPort("127.0.0.1", 0), TOKEN)  # type: ignore[arg-type]
        await first.start()
        assert first._runner is not None
        (address,) = first._runner.addresses
        second = WebServer(engine, HostPort("127.0.0.1", address[1]), TOKEN)  # type: ignore[arg-type]
        with pytest.raises(OSError):
            await second.start()
        await second.close()
        await first.close()

    asyncio.run(main())


# --- the page's words (pure) ------------------------------------------------------------------


def off_grid(**kw: Any) -> Snapshot:
    devices = tuple(
        replace(r, power=Power.OFF, shed_reason="off-grid") if r.name == "TV" else r for r in HOUSE
    )
    values: dict[str, Any] = {"devices": devices, "outage_since": NOW - 12 * MIN}
    return snapshot(Grid.OFF, **(values | kw))


def view(snap: Snapshot, now: float = NOW) -> dict[str, Any]:
    doc = status_doc(snap, now, commands=True)
    assert doc["snapshot"] == encode(snap)
    result: dict[str, Any] = doc["view"]
    return result


def test_words_on_grid() -> None:
    words = view(snapshot())
    assert words["grid"] == {"head": "ON GRID", "detail": "since 14:00", "tone": "ok"}
    assert words["battery"] == {
        "pct": 54.0,
        "words": "54 %",
        "tone": "ok",
        "power": "load 2.7 kW · solar 0.0 kW",
    }
    assert words["time_left"]["label"] == "on battery"
    assert words["status"] == [{"words": "nothing shed", "tone": "dim"}]


def test_words_in_an_outage() -> None:
    words = view(off_grid())
    assert words["grid"]["head"] == "OFF GRID" and words["grid"]["tone"] == "bad"
    assert words["grid"]["detail"] == "on battery for 12 min, since 14:18"
    left = words["time_left"]
    assert left["label"] == "time left" and left["head"].startswith("≈ ")
    assert "kWh assumed" in left["words"]
    tv = next(d for d in words["devices"] if d["name"] == "TV")
    assert tv | {"tone": ""} == {
        "name": "TV",
        "kind": "kasa",
        "state": "off",
        "tone": "",
        "rule": "shed at outage",
        "pin": "auto",
        "shed": "SHED: off-grid",
        "note": "",
    }
    assert {"words": "1 switched off by loadshed", "tone": "shed"} in words["status"]


def test_words_when_the_grid_is_unknown_say_nothing_is_done() -> None:
    reading = GridReading(Grid.UNKNOWN, detail="no answer in 5 s", status=Status.UNREACHABLE)
    words = view(snapshot(reading=reading, unknown_since=NOW - 5 * MIN))
    assert words["grid"]["head"] == "GRID UNKNOWN" and words["grid"]["tone"] == "warn"
    assert "unreachable since 14:25 (no answer in 5 s)" in words["grid"]["detail"]
    assert "nothing is shed or restored" in words["grid"]["detail"]
    assert words["battery"]["words"] == "unknown"
    assert words["time_left"]["head"] == "unknown"


def test_words_for_pins_sources_problems_timers_and_an_old_snapshot() -> None:
    pinned = tuple(replace(r, pin=Pin.ON) if r.name == "TV" else r for r in HOUSE)
    canary = SourceRow("canary", "Garage", GridReading(Grid.OFF, "off", source="canary"), 3.0)
    snap = off_grid(
        devices=pinned,
        sources=(canary,),
        problems=("cannot write state.json",),
        disagreement="the canary says off grid, the Powerwall on grid",
        restore_at=NOW + 40,
    )
    words = view(snap, now=NOW + 120)
    tv = next(d for d in words["devices"] if d["name"] == "TV")
    assert tv["pin"] == "on" and tv["rule"] == "pinned: keep on (shed at outage when auto)"
    assert words["sources"] == [
        {"name": "canary", "words": "off grid", "tone": "bad", "why": "off", "age": "3 s ago"}
    ]
    assert words["problems"][:2] == [
        "cannot write state.json",
        "grid sources disagree: the canary says off grid, the Powerwall on grid",
    ]
    assert "loadshed's last look at the house was 2 min ago" in words["problems"]
    assert {"words": "restoring in 0 s", "tone": "warn"} in words["status"]


def test_words_while_starting() -> None:
    assert view(snapshot(started=False))["grid"]["head"] == "STARTING"


# --- config.py: WEB_LISTEN and WEB_TOKEN --------------------------------------------------------

MINIMAL = 'PWIPNAME = "192.0.2.50"\nPWPASS = "hunter2-very-secret"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.py"
    path.write_text(MINIMAL + text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_the_page_is_off_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    assert config.web_listen is None and config.web_token == ""


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("0.0.0.0:8470", HostPort("0.0.0.0", 8470)),
        ("192.0.2.10:80", HostPort("192.0.2.10", 80)),
        ("[::]:8470", HostPort("::", 8470)),
        ("monitor-pc.lan:8470", HostPort("monitor-pc.lan", 8470)),
        ("", None),
    ],
)
def test_web_listen_is_an_address_and_a_port(
    tmp_path: Path, written: str, expected: HostPort | None
) -> None:
    assert load_config(write(tmp_path, f"WEB_LISTEN = {written!r}\n"), {}).web_listen == expected


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("8470", 'a port alone: "0.0.0.0:8470" is every address'),
        ("nas.lan", "(no port)"),
        ("0.0.0.0", "(no port)"),
        ("0.0.0.0:99999", "not a number from 1 to 65535"),
        ("[::1:8470", "an IPv6 address is written [address]"),
        ("http://0.0.0.0:8470", "expected"),
        (8470, "expected text in quotes"),
    ],
)
def test_a_bad_web_listen_is_a_clear_error_on_its_line(
    tmp_path: Path, written: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"\nWEB_LISTEN = {written!r}\n"), {})
    message = str(info.value)
    assert "config.py:4: WEB_LISTEN is" in message, message
    assert expected in message, message


def test_web_token_is_a_secret_with_its_environment_override(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"WEB_TOKEN = {TOKEN!r}\n"), {})
    assert config.web_token == TOKEN
    assert TOKEN in config.secrets() and TOKEN not in repr(config)
    from_env = "from-the-environment-0123456789"
    config = load_config(
        write(tmp_path, f"WEB_TOKEN = {TOKEN!r}\n"), {"LOADSHED_WEB_TOKEN": from_env}
    )
    assert config.web_token == from_env


@pytest.mark.parametrize(
    "token", ["short", "has spaces in it, long enough", "caf\u00e9-0123456789abcdef"]
)
def test_a_weak_or_unsendable_token_is_refused_without_echoing_it(
    tmp_path: Path, token: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"WEB_TOKEN = {token!r}\n"), {})
    message = str(info.value)
    assert "config.py:3: WEB_TOKEN must be at least 16 characters" in message
    assert token not in message
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, ""), {"LOADSHED_WEB_TOKEN": token})


def test_a_token_pasted_into_web_listen_is_not_echoed(tmp_path: Path) -> None:
    text = f"WEB_TOKEN = {TOKEN!r}\nWEB_LISTEN = {TOKEN!r}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert "WEB_LISTEN" in str(info.value) and TOKEN not in str(info.value)

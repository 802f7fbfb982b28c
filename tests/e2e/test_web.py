"""The phone page in a real browser: headless Chromium (Debian's) runs the page's script against
`loadshed run --no-ui` and the simulated house, all on 127.0.0.1.

The browser is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: no
debugging port, no driver binary): clicks and typing are real input events. Chromium is told
to make no request of its own (no background networking, component updates, sync, metrics...),
every host name but 127.0.0.1 fails to resolve, anything not on loopback goes to a dead proxy,
and its NetLog (every request the browser made, its own included) is checked afterwards.

The README's screenshot is taken by hand, not by the tests:

    .venv/bin/python -m tests.e2e.test_web docs/phone.png
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from loadshed.sim.house import SimHouse
from tests.e2e.conftest import SHEDDABLE, WAIT_S, Loadshed, wait_until

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., Loadshed]
CHROMIUM: Final = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: apt-get install chromium (scripts/test does, as root)"
)
TOKEN: Final = "phone-token-0123456789abcdef"
PHONE: Final = {"width": 390, "height": 844}  # CSS pixels: a common phone
CALL_TIMEOUT_S: Final = 15.0  # one DevTools call
LOOPBACK_URL: Final = re.compile(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/")
DEAD_END: Final = "http://127.0.0.1:9"  # the discard port: nothing listens there

FLAGS: Final = (
    "--headless",
    "--disable-gpu",
    "--hide-scrollbars",
    "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
    # No request of the browser's own: updates, sync, metrics, safe browsing, translation...
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-field-trial-config",
    "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,"
    "InterestFeedContentSuggestions,PrivacySandboxSettings4,SafeBrowsingEnhancedProtection,"
    "NetworkTimeServiceQuerying",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    # Two that ask anyway (Chromium 156 checks for component updates despite the flag above,
    # and lists Google accounts at start): sent to loopback's discard port, where nothing
    # listens, so the NetLog check below sees every request stay on 127.0.0.1.
    f"--component-updater=url-source={DEAD_END}",
    f"--gaia-url={DEAD_END}",
    # ... and whatever else might: no name resolves but loopback, and anything not on
    # loopback goes to a proxy nobody listens on (loopback itself is never proxied).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    f"--proxy-server={DEAD_END}",
)


# --- the browser --------------------------------------------------------------------------------


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe: one page, phone-sized."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        self.netlog = profile / "netlog.json"
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4; moved high first, so
        # that putting them in place cannot overwrite one with the other.
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def pipes_on_3_and_4() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        root = ("--no-sandbox",) if os.geteuid() == 0 else ()  # Chromium's sandbox refuses root
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                *root,
                f"--user-data-dir={profile}",
                f"--log-net-log={self.netlog}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # every other descriptor is close-on-exec already (PEP 446)
            preexec_fn=pipes_on_3_and_4,
        )
        for fd in (to_chrome_r, from_chrome_w, high_r, high_w):
            os.close(fd)
        self._next = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.urls: set[str] = set()
        self.peers: set[str] = set()
        self.udp_sent = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            deviceScaleFactor=2,
            mobile=True,
            **PHONE,
        )

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self._changed.notify_all()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command on the page's session (the browser's before it has one)."""
        self._next += 1
        number = self._next
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        with self._changed:
            if not self._changed.wait_for(lambda: number in self._answers, CALL_TIMEOUT_S):
                raise AssertionError(f"Chromium did not answer {method} in {CALL_TIMEOUT_S:g} s")
            answer = self._answers.pop(number)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        answer = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self, selector: str) -> str:
        found = self.evaluate(
            f"(() => {{ const n = document.querySelector({json.dumps(selector)});"
            " return n === null || n.closest('[hidden]') ? null : n.innerText; })()"
        )
        return found if isinstance(found, str) else ""

    def wait_text(self, selector: str, wanted: str, timeout_s: float = WAIT_S) -> str:
        """Wait until the element's text holds wanted; its text then."""
        wait_until(
            f"{selector} to say {wanted!r} (it says {self.text(selector)!r})",
            lambda: wanted in self.text(selector),
            timeout_s,
        )
        return self.text(selector)

    def click(self, selector: str) -> None:
        """A real click (mouse pressed and released) in the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const n = document.querySelector({json.dumps(selector)});"
            " n.scrollIntoView({block: 'center'}); const r = n.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2, n.disabled === true]; })()"
        )
        x, y, disabled = box
        assert not disabled, f"{selector} is disabled"
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        """What the phone's screen shows, as a PNG."""
        self.evaluate("window.scrollTo(0, 0)")
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def page_requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in list(self.events)
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def page_errors(self) -> list[str]:
        """Script exceptions and console or security errors (a CSP violation, say); failed
        requests are not errors here (a refused command answers 401 on purpose)."""
        errors = []
        for event in list(self.events):
            if event.get("method") == "Runtime.exceptionThrown":
                errors.append(json.dumps(event["params"]["exceptionDetails"])[:400])
            elif event.get("method") == "Log.entryAdded":
                entry = event["params"]["entry"]
                if entry["level"] == "error" and entry["source"] != "network":
                    errors.append(f"{entry['source']}: {entry['text']}")
        return errors

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.session = ""
            self.call("Browser.close")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._to_chrome)
        self._reader.join(5)
        os.close(self._from_chrome)
        self.urls, self.peers, self.udp_sent = _netlog(self.netlog)

    def elsewhere(self) -> set[str]:
        """Every URL the browser asked for, the page's and its own, that is not on 127.0.0.1,
        and every address it opened a TCP connection to or sent a datagram from that is not
        on 127.0.0.0/8: should be none. Known after close(), from the browser's NetLog."""
        urls = {u for u in self.urls if not LOOPBACK_URL.match(u) and not _local_scheme(u)}
        peers = {p for p in self.peers if not _loopback(p)}
        sent = {f"{self.udp_sent} datagrams"} if self.udp_sent else set()
        return urls | peers | sent


def _local_scheme(url: str) -> bool:
    return url.split(":", 1)[0] in ("about", "data", "chrome", "blob", "devtools")


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8") or host == "::1"


def _netlog(path: Path) -> tuple[set[str], set[str], int]:
    """From a NetLog: every URL requested, every address a TCP connection was attempted to,
    and how many datagrams were sent (a UDP "connect" alone sends nothing: Chromium does one
    to learn its own IPv6 address)."""
    text = path.read_text(encoding="utf-8", errors="replace").rstrip()
    if not text.endswith("}"):  # cut short: close the list of events
        text = text.rstrip(",") + "]}"
    log = json.loads(text)
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls, peers, sent = set(), set(), 0
    for event in log["events"]:
        name, params = names.get(event["type"], ""), event.get("params") or {}
        if isinstance(params.get("url"), str):
            urls.add(params["url"])
        if name == "TCP_CONNECT_ATTEMPT" and "address" in params:
            peers.add(params["address"])
        if name == "UDP_BYTES_SENT":
            sent += 1
    return urls, peers, sent


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    profile = Path(tempfile.mkdtemp(prefix="loadshed-chromium-"))
    opened = Browser(profile)
    try:
        yield opened
    finally:
        opened.close()
        shutil.rmtree(profile, ignore_errors=True)


# --- the daemon with its page -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def with_page(config: Path, *, token: str = TOKEN, port: int | None = None) -> str:
    """Add WEB_LISTEN (127.0.0.1, a free port) and WEB_TOKEN to config.py; the page's URL."""
    port = port or free_port()
    with config.open("a") as f:
        f.write(f'WEB_LISTEN = "127.0.0.1:{port}"\n')
        if token:
            f.write(f"WEB_TOKEN = {token!r}\n")
    return f"http://127.0.0.1:{port}/"


def card(device: str) -> str:
    return f'#devices li[data-device="{device}"]'


def pin(page: Browser, device: str, how: str) -> None:
    """Open the device's pins (they fold away) and press one."""
    if not page.evaluate(f"document.querySelector('{card(device)} details').open"):
        page.click(f"{card(device)} summary")
    page.click(f'{card(device)} button[data-pin="{how}"]')


def tap_twice(page: Browser, button: str) -> None:
    """Shed and Restore ask for a second tap."""
    page.click(button)
    page.wait_text(button, "Tap again")
    page.click(button)


# --- the tests ----------------------------------------------------------------------------------


@needs_chromium
def test_the_page_shows_an_outage_and_its_buttons_shed_and_restore(
    house: SimHouse, config: Path, start: Start
) -> None:
    url = with_page(config)
    daemon = start()
    daemon.wait_for_line("ready:")
    daemon.wait_for_line("phone page: http://127.0.0.1:")
    with browser() as page:
        began = time.monotonic()
        page.open(url)
        page.wait_text("#grid", "ON GRID")
        loaded_s = time.monotonic() - began
        for name in SHEDDABLE:
            page.wait_text(f"{card(name)} .state", "on")
        assert "80 %" in page.text("#battery")

        house.cut_grid()
        page.wait_text("#grid", "OFF GRID")
        assert "on battery" in page.text("#grid-detail")
        for name in SHEDDABLE:
            page.wait_text(card(name), "SHED: off-grid")
        assert not any(house.is_on(n) for n in SHEDDABLE)
        page.wait_text("#status", "switched off by loadshed")

        # Without the token, the buttons are refused and the house stays as it is.
        tap_twice(page, "#restore")
        refused = page.wait_text("#result", "refused")
        assert "wrong or missing token" in refused
        pin(page, "TV", "on")
        page.wait_text("#result", "TV: keep on: refused")
        assert not any(house.is_on(n) for n in SHEDDABLE)
        assert daemon.count("forced from the phone page") == 0

        # With it: Restore brings them back, Shed switches them off, a pin keeps one on.
        page.type("#token", TOKEN)
        page.click("#save-token")
        page.wait_text("#token-saved", "can send commands")
        began = time.monotonic()
        tap_twice(page, "#restore")
        page.wait_text("#result", "Restore: 4 devices")
        restore_s = time.monotonic() - began
        assert all(house.is_on(n) for n in SHEDDABLE)
        for name in SHEDDABLE:
            page.wait_text(f"{card(name)} .state", "on")
        page.wait_text("#status", "shedding paused by a forced restore")
        assert "TV: on" in page.text("#result")

        tap_twice(page, "#shed")
        page.wait_text("#result", "Shed: 6 devices")  # the tiers too: a forced shed is all
        wait_until("the shed from the page", lambda: not any(house.is_on(n) for n in SHEDDABLE))
        for name in SHEDDABLE:
            page.wait_text(card(name), "SHED: forced from the phone page")

        pin(page, "TV", "on")
        page.wait_text("#result", "TV: on")
        wait_until("TV back on", lambda: house.is_on("TV"))
        page.wait_text(card("TV"), "pinned: keep on")
        pressed = f'{card("TV")} button[aria-pressed="true"]'
        assert page.text(pressed) == "Keep on"
        assert page.text(f"{card('TV')} summary") == "Pinned: keep on"
        round_trip_ms = page.evaluate("document.getElementById('result').dataset.ms")

        assert page.page_errors() == []
        requests = page.page_requests()
        assert requests and all(LOOPBACK_URL.match(u) for u in requests), requests
    assert page.elsewhere() == set()
    assert any(u.startswith(url) for u in page.urls)  # the NetLog saw the page's requests
    assert any(url.endswith(f":{p.rsplit(':', 1)[1]}/") for p in page.peers)  # and connections
    print(
        f"\npage load to ON GRID: {loaded_s * 1000:.0f} ms; restore from two taps to the "
        f"page's answer: {restore_s * 1000:.0f} ms; last command's round trip (the page's "
        f"fetch): {round_trip_ms} ms"
    )
    daemon.wait_for_line("phone page (127.0.0.1): Restore")
    assert daemon.stop() == 0
    assert TOKEN not in daemon.output


@needs_chromium
def test_without_a_token_the_page_is_read_only(house: SimHouse, config: Path, start: Start) -> None:
    url = with_page(config, token="")
    daemon = start()
    daemon.wait_for_line("phone page: http://127.0.0.1:")
    assert daemon.saw("read-only: no WEB_TOKEN set")
    with browser() as page:
        page.open(url)
        page.wait_text("#grid", "ON GRID")
        page.wait_text("#commands-off", "Commands are off")
        assert page.evaluate("document.getElementById('shed').disabled") is True
        assert page.evaluate("document.querySelector('#devices button').disabled") is True
        assert page.text("#token-box") == ""
        # The narrowest phones: nothing wider than the screen.
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=360,
            height=740,
            deviceScaleFactor=2,
            mobile=True,
        )
        wait_until("a 360 px wide layout", lambda: page.evaluate("window.innerWidth") == 360)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        # The daemon gone: the page says what it shows may be old.
        assert daemon.stop() == 0
        page.wait_text("#stale", "Cannot reach loadshed")
        assert page.text("#grid") == "ON GRID"  # the last known, under the warning
        assert page.page_errors() == []


def test_a_page_that_cannot_listen_never_stops_the_shedding(
    house: SimHouse, config: Path, start: Start
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with_page(config, port=taken.getsockname()[1])
        daemon = start()
        daemon.wait_for_line("cannot serve the phone page on 127.0.0.1:")
        daemon.wait_for_line("ready:")
        house.cut_grid()
        wait_until("the shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert daemon.stop() == 0


# --- the README's screenshot, by hand -----------------------------------------------------------


def take_screenshot(path: Path) -> None:
    """The page during an outage, with a token entered, saved as a PNG at path."""
    with tempfile.TemporaryDirectory(prefix="loadshed-shot-") as tmp, SimHouse() as house:
        config = house.write_config(Path(tmp) / "config.py")
        with config.open("a") as f:
            f.write("POLL_SECONDS = 0.5\nRESTORE_AFTER_SECONDS = 2\n")
        url = with_page(config)
        args = ["run", "--no-ui", "--config", str(config), "--state-dir", f"{tmp}/state"]
        daemon = Loadshed(args, Path(tmp))
        try:
            daemon.wait_for_line("ready:")
            house.cut_grid()
            wait_until("the shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
            with browser() as page:
                page.open(url)
                page.wait_text("#grid", "OFF GRID")
                for name in SHEDDABLE:
                    page.wait_text(card(name), "SHED: off-grid")
                page.type("#token", TOKEN)
                page.click("#save-token")
                page.wait_text("#token-saved", "can send commands")
                page.screenshot(path)
        finally:
            daemon.stop(signal.SIGTERM)


if __name__ == "__main__":
    if CHROMIUM is None:
        sys.exit("no chromium: apt-get install chromium")
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/phone.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    take_screenshot(target)
    print(f"wrote {target}")

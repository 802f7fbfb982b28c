"""Alerts end to end: the Notifier against a real SMTP server (aiosmtpd) and a real HTTP receiver
reached through Apprise's json://, both on 127.0.0.1.

The sender loop runs on the `sim_loop` thread's event loop, as it runs on the monitor's; the
test thread submits events and polls with a deadline for what the servers received.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email
import email.policy
import http.server
import ipaddress
import json
import logging
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadshed import notify
from loadshed.config import Config, HostPort
from loadshed.model import Event, EventKind
from loadshed.notify import SMS_MAX_CHARS, SMTP_LOGIN_REJECTED, Notifier, short_id
from loadshed.sim.loop import LoopThread

SMTP_USER = "owner@example.com"
SMTP_PASSWORD = "smtp-Secret-pa55word"
APPRISE_TOKEN = "apprise-T0ken-9f8e7d"
SMS_TO = "5551234567@vtext.com"
MAIL_TO = "owner@example.com"
WAIT_S = 10.0  # ceiling for anything to arrive on loopback; a pass takes milliseconds
T0 = time.mktime((2025, 1, 5, 14, 2, 0, 0, 0, -1))


def hhmm(at: float) -> str:
    return time.strftime("%H:%M", time.localtime(at))


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll check until it holds; fail naming what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


# --- a throw-away certificate authority ----------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a certificate for 127.0.0.1 signed by it."""
    where = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loadshed test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(where / "ca.pem", where / "cert.pem", where / "key.pem")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls


@pytest.fixture
def trust(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> Tls:
    """Make the test CA the only one the client trusts (ssl.create_default_context reads it)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return tls


# --- a real SMTP server --------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """aiosmtpd on 127.0.0.1, keeping what it received; optional STARTTLS, SMTPS and AUTH."""

    port: int = field(default_factory=free_port)
    starttls: Tls | None = None
    implicit: Tls | None = None
    auth: bool = False
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        self.logins.append("ok" if ok else "rejected")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    def start(self) -> SmtpSink:
        options: dict[str, Any] = {"server_hostname": "localhost"}
        if self.starttls is not None:
            options.update(tls_context=self.starttls.server_context(), require_starttls=True)
        if self.implicit is not None:
            options["ssl_context"] = self.implicit.server_context()
        if self.auth:
            options.update(authenticator=self.authenticate, auth_require_tls=False)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def bodies(self) -> list[str]:
        return [str(m.get_content()).replace("\r\n", "\n").rstrip("\n") for m in self.messages]


@pytest.fixture
def smtp_sinks() -> Iterator[list[SmtpSink]]:
    sinks: list[SmtpSink] = []
    yield sinks
    for sink in sinks:
        sink.stop()


# --- a real HTTP receiver for Apprise's json:// ---------------------------------------------------


class Receiver:
    """http.server on 127.0.0.1 keeping each JSON POST; can be told to hang."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.hang = False
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hang:
                    receiver.release.wait(WAIT_S)
                    return
                receiver.posts.append(json.loads(body))
                receiver.auth.append(self.headers.get("Authorization", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://loadshed:{APPRISE_TOKEN}@127.0.0.1:{self.port}/"

    def messages(self) -> list[str]:
        return [str(p["message"]) for p in self.posts]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --- the notifier under test ---------------------------------------------------------------------


def make_config(
    tmp_path: Path,
    sink: SmtpSink | None = None,
    *,
    mail_to: str = SMS_TO,
    password: str = SMTP_PASSWORD,
    starttls: bool = False,
    urls: tuple[str, ...] = (),
    port: int | None = None,
) -> Config:
    return Config(
        path=tmp_path / "config.py",
        powerwall=HostPort("127.0.0.1"),
        powerwall_password="powerwall-pass-xyz",
        mail_to=mail_to if (sink or port) else "",
        smtp_host="127.0.0.1" if (sink or port) else "",
        smtp_port=port or (sink.port if sink else 587),
        smtp_user=SMTP_USER if sink and sink.auth else "",
        smtp_password=password if sink and sink.auth else "",
        smtp_starttls=starttls,
        mail_from="loadshed@example.com",
        notify_urls=urls,
    )


@contextmanager
def running(notifier: Notifier, loop: LoopThread) -> Iterator[None]:
    """Run notifier.run() as a task on loop; cancel it after, and check it stopped cleanly."""

    async def start() -> asyncio.Task[None]:
        return asyncio.create_task(notifier.run())

    async def stop(task: asyncio.Task[None]) -> str:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "returned"

    task = loop.run(start())
    try:
        yield
    finally:
        assert loop.run(stop(task)) == "cancelled"


def outage(at: float = T0) -> list[Event]:
    """An outage as the engine reports it: lost, shed, back, restored."""
    return [
        Event(EventKind.OFF_GRID, at, "a1b2c3d4e5f6", 81.0, "SystemIslandedActive"),
        Event(
            EventKind.SHED_DONE,
            at + 40,
            "b1b2c3d4e5f6",
            81.0,
            done=("NAS", "Gaming PC", "Heater 2", "TV", "Lamp", "Printer"),
            failed=(("Heater", "no answer in 3 s"),),
        ),
        Event(EventKind.ON_GRID, at + 4080, "c1b2c3d4e5f6", 64.0, "SystemGridConnected"),
        Event(
            EventKind.RESTORE_DONE,
            at + 4200,
            "d1b2c3d4e5f6",
            64.0,
            done=("NAS", "Gaming PC", "Heater 2", "TV", "Lamp", "Printer"),
        ),
    ]


def expected_sms(late: tuple[str, ...] = ("", "", "", "")) -> list[str]:
    e = outage()
    ref = [short_id(x.id) for x in e]
    return [
        f"loadshed: grid lost {hhmm(e[0].at)}{late[0]}, battery 81%. #{ref[0]}",
        f"loadshed: off-grid, shed done {hhmm(e[1].at)}{late[1]}, battery 81%. "
        f"Shed 6 devices, 1 failed (Heater: no answer in 3 s). #{ref[1]}",
        f"loadshed: grid back {hhmm(e[2].at)}{late[2]}, battery 64%. #{ref[2]}",
        f"loadshed: grid back, restore done {hhmm(e[3].at)}{late[3]}, battery 64%. "
        f"Restored 6 devices. #{ref[3]}",
    ]


def letters(state: Path) -> list[Path]:
    return sorted((state / "outbox").glob("0*.json"))


def taken_by(state: Path) -> list[list[str]]:
    """For each outbox file, the kinds of channel that have taken it ("smtp", "apprise")."""
    return [
        [c.partition("-")[0] for c in json.loads(p.read_text())["items"][0]["taken"]]
        for p in letters(state)
    ]


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("starttls", "auth"),
    [
        pytest.param(False, False, id="plain"),
        pytest.param(False, True, id="plain-auth"),
        pytest.param(True, False, id="starttls"),
        pytest.param(True, True, id="starttls-auth"),
    ],
)
def test_an_outage_arrives_as_texts_in_order(
    starttls: bool,
    auth: bool,
    trust: Tls,
    smtp_sinks: list[SmtpSink],
    sim_loop: LoopThread,
    tmp_path: Path,
) -> None:
    sink = SmtpSink(starttls=trust if starttls else None, auth=auth).start()
    smtp_sinks.append(sink)
    clock = Clock(T0 + 5)
    notifier = Notifier(tmp_path, make_config(tmp_path, sink, starttls=starttls), clock=clock)
    assert notifier.channels == (f"{SMS_TO} via 127.0.0.1:{sink.port}",)
    with running(notifier, sim_loop):
        for n, event in enumerate(outage(), start=1):
            clock.now = event.at + 5  # each sent as it happens
            notifier.submit(event)
            wait_until(lambda: len(sink.messages) == n, f"text {n}")  # noqa: B023 (waited for here)
        wait_until(lambda: notifier.pending() == 0, "the outbox to empty")
    assert sink.bodies() == expected_sms()
    assert all(len(body) <= SMS_MAX_CHARS for body in sink.bodies())
    for message, event in zip(sink.messages, outage(), strict=True):
        assert message["Subject"] is None  # carriers would put it in the text
        assert message["To"] == SMS_TO and message["From"] == "loadshed@example.com"
        assert message["X-Loadshed-Event"] == short_id(event.id)
    assert sink.logins == (["ok"] * 4 if auth else [])
    assert letters(tmp_path) == []
    assert not any(SMTP_PASSWORD in m.as_string() for m in sink.messages)


@pytest.mark.timeout(60)
def test_a_plain_address_gets_a_subject_and_the_full_body(
    trust: Tls, smtp_sinks: list[SmtpSink], sim_loop: LoopThread, tmp_path: Path
) -> None:
    sink = SmtpSink(starttls=trust, auth=True).start()
    smtp_sinks.append(sink)
    config = make_config(tmp_path, sink, mail_to=MAIL_TO, starttls=True)
    notifier = Notifier(tmp_path, config, clock=Clock(T0 + 60))
    with running(notifier, sim_loop):
        notifier.submit(outage()[1])
        wait_until(lambda: len(sink.messages) == 1, "one email")
    message = sink.messages[0]
    assert message["Subject"] == f"loadshed: Load shed at {hhmm(T0 + 40)}"
    body = sink.bodies()[0].splitlines()
    assert body[:5] == [
        f"Load shed at {hhmm(T0 + 40)}. Battery 81%.",
        "Shed 6 devices, 1 failed.",
        "Switched off (6): NAS, Gaming PC, Heater 2, TV, Lamp, Printer",
        "Failed (1):",
        "  - Heater: no answer in 3 s",
    ]
    assert body[-1].startswith(f"Event #{short_id(outage()[1].id)}, ")


@pytest.mark.timeout(60)
def test_port_465_is_implicit_tls(
    trust: Tls, smtp_sinks: list[SmtpSink], sim_loop: LoopThread, tmp_path: Path
) -> None:
    sink = SmtpSink(port=465, implicit=trust, auth=True)
    try:
        sink.start()
    except (OSError, RuntimeError) as err:
        pytest.skip(f"cannot listen on 127.0.0.1:465 here ({err})")
    smtp_sinks.append(sink)
    notifier = Notifier(tmp_path, make_config(tmp_path, sink, starttls=True))
    assert asyncio.run(notifier.send_test()) == [(notifier.channels[0], "sent")]
    assert sink.bodies()[0].startswith("loadshed: test message ")


@pytest.mark.timeout(60)
def test_smtp_down_through_the_outage_then_every_text_once_in_order_and_marked_late(
    smtp_sinks: list[SmtpSink],
    sim_loop: LoopThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the real backoff, shortened (patched where it is read: loadshed.notify.notifier)
    monkeypatch.setattr("loadshed.notify.notifier.RETRY_FIRST_S", 0.05)
    monkeypatch.setattr("loadshed.notify.notifier.RETRY_MAX_S", 0.2)
    caplog.set_level(logging.INFO, logger="loadshed.notify")
    sink = SmtpSink()  # its port reserved, nothing listening yet
    smtp_sinks.append(sink)
    # Sending happens 37 min after the restore, the first moment the internet is back. (The
    # clock is not moved mid-test: a try worded before a move could land after the start.)
    notifier = Notifier(tmp_path, make_config(tmp_path, sink), clock=Clock(T0 + 4200 + 37 * 60))
    with running(notifier, sim_loop):
        for event in outage():
            notifier.submit(event)
        wait_until(lambda: "refused the connection" in caplog.text, "a failed try to be logged")
        assert notifier.pending() == 4 and len(letters(tmp_path)) == 4
        sink.start()
        wait_until(lambda: notifier.pending() == 0, "the outbox to empty")
    late = (" (sent 1 h 47 min late)", " (sent 1 h 46 min late)", " (sent 39 min late)")
    assert sink.bodies() == expected_sms((*late, " (sent 37 min late)"))
    assert letters(tmp_path) == []  # nothing left that could ever be sent again
    assert "failing: 127.0.0.1:" in caplog.text
    assert f"alerts reach {notifier.channels[0]} again after" in caplog.text


@pytest.mark.timeout(60)
def test_a_notifier_killed_with_texts_queued_is_followed_by_one_that_sends_them(
    smtp_sinks: list[SmtpSink],
    receiver: Receiver,
    sim_loop: LoopThread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="loadshed.notify")
    sink = SmtpSink()  # down
    smtp_sinks.append(sink)
    config = make_config(tmp_path, sink, urls=(receiver.url,))
    first = Notifier(tmp_path, config, clock=Clock(T0 + 5))
    for event in outage()[:3]:
        first.submit(event)
    with running(first, sim_loop):
        wait_until(lambda: taken_by(tmp_path) == [["apprise"]] * 3, "Apprise to take three")
        # Once the failure is logged, no SMTP send is in flight (the next try is 30 s away):
        # stopping here leaves no thread that could still deliver, as after a kill -9.
        wait_until(lambda: "refused the connection" in caplog.text, "SMTP to fail")
    del first  # nothing is written on cancellation: the files are as a kill -9 leaves them
    assert [p.name for p in letters(tmp_path)] == [
        "00000001-off_grid.json",
        "00000002-shed_done.json",
        "00000003-on_grid.json",
    ]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in letters(tmp_path))
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700

    sink.start()
    second = Notifier(tmp_path, config, clock=Clock(T0 + 4205))
    assert second.pending() == 3
    with running(second, sim_loop):
        second.submit(outage()[3])  # the restore, after the restart
        wait_until(lambda: len(sink.messages) == 4, "the four texts")
        wait_until(lambda: len(receiver.posts) == 4, "Apprise to take the fourth")
        wait_until(lambda: second.pending() == 0, "the outbox to empty")
    assert [m["X-Loadshed-Event"] for m in sink.messages] == [short_id(e.id) for e in outage()]
    assert sink.bodies()[0].startswith(f"loadshed: grid lost {hhmm(T0)} (sent 1 h 10 min late)")
    assert len(receiver.posts) == 4  # Apprise, which had taken three, got only the new one
    assert receiver.posts[3]["title"].startswith("loadshed: Restore finished at ")
    assert letters(tmp_path) == []


@pytest.mark.timeout(60)
def test_apprise_json_channel_gets_the_same_events_with_title_and_full_body(
    receiver: Receiver, sim_loop: LoopThread, tmp_path: Path
) -> None:
    notifier = Notifier(tmp_path, make_config(tmp_path, urls=(receiver.url,)), clock=Clock(T0))
    assert notifier.channels == (f"json://loadshed:****@127.0.0.1:{receiver.port}/",)
    with running(notifier, sim_loop):
        for event in outage():
            notifier.submit(event)
        wait_until(lambda: len(receiver.posts) == 4, "four posts")
    titles = [p["title"] for p in receiver.posts]
    assert titles == [
        f"loadshed: Grid lost at {hhmm(T0)}",
        f"loadshed: Load shed at {hhmm(T0 + 40)}",
        f"loadshed: Grid back at {hhmm(T0 + 4080)}",
        f"loadshed: Restore finished at {hhmm(T0 + 4200)}",
    ]
    assert [p["type"] for p in receiver.posts] == ["warning", "warning", "success", "success"]
    shed = receiver.messages()[1].splitlines()
    assert shed[2:5] == [
        "Switched off (6): NAS, Gaming PC, Heater 2, TV, Lamp, Printer",
        "Failed (1):",
        "  - Heater: no answer in 3 s",
    ]
    for message, event in zip(receiver.messages(), outage(), strict=True):
        assert f"#{short_id(event.id)}" in message
    token = base64.b64encode(f"loadshed:{APPRISE_TOKEN}".encode()).decode()
    assert receiver.auth == [f"Basic {token}"] * 4  # the token was used, and only on the wire


@pytest.mark.timeout(60)
def test_wrong_smtp_password_is_said_plainly_while_apprise_delivers_and_no_secret_leaks(
    smtp_sinks: list[SmtpSink],
    receiver: Receiver,
    sim_loop: LoopThread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Pa55-guess-42"
    sink = SmtpSink(auth=True).start()
    smtp_sinks.append(sink)
    config = make_config(tmp_path, sink, password=wrong, urls=(receiver.url,))
    notifier = Notifier(tmp_path, config, clock=Clock(T0 + 5))
    leaky = Event(
        EventKind.DEVICE_FAILED,
        T0 + 50,
        "e1b2c3d4e5f6",
        80.0,
        failed=(("NAS", f"ssh said: bad password {wrong} for {APPRISE_TOKEN}"),),
    )
    for event in [*outage()[:2], leaky]:
        notifier.submit(event)  # before run(): SMTP then tries once and waits 30 s, undisturbed
    with running(notifier, sim_loop):
        wait_until(lambda: taken_by(tmp_path) == [["apprise"]] * 3, "Apprise to take all three")
        wait_until(lambda: SMTP_LOGIN_REJECTED in caplog.text, "the login failure to be logged")
        outbox_files = {p.name: p.read_text() for p in (tmp_path / "outbox").iterdir()}
        results = sim_loop.run(notifier.send_test())
    assert results == [
        (f"{SMS_TO} via 127.0.0.1:{sink.port}", SMTP_LOGIN_REJECTED),
        (f"json://loadshed:****@127.0.0.1:{receiver.port}/", "sent"),
    ]
    assert sink.messages == [] and "rejected" in sink.logins
    failing = [r for r in caplog.records if SMTP_LOGIN_REJECTED in r.getMessage()]
    assert failing and failing[0].levelno == logging.WARNING
    assert "NAS: ssh said: bad password *** for ***" in receiver.messages()[2]
    assert len(outbox_files) >= 3  # the SMTP channel has taken none of them
    for secret in (wrong, APPRISE_TOKEN):
        for record in caplog.records:
            assert secret not in record.getMessage(), record.name
        assert secret not in caplog.text
        assert not any(secret in m for m in receiver.messages())
        assert not any(secret in str(p["title"]) for p in receiver.posts)
        assert not any(secret in name or secret in text for name, text in outbox_files.items())
        assert not any(secret in name for name, _ in results)


@pytest.mark.timeout(60)
def test_a_long_wait_collapses_the_oldest_into_one_summary_text(
    smtp_sinks: list[SmtpSink], sim_loop: LoopThread, tmp_path: Path
) -> None:
    sink = SmtpSink()
    smtp_sinks.append(sink)
    notifier = Notifier(tmp_path, make_config(tmp_path, sink), clock=Clock(T0 + 7200))
    storm = [
        Event(
            EventKind.OFF_GRID if n % 2 == 0 else EventKind.ON_GRID,
            T0 + 60 * n,
            f"storm-{n:03d}",
            80.0 - n,
        )
        for n in range(notify.MAX_WAITING + 5)
    ]
    for event in storm:
        notifier.submit(event)
    assert notifier.pending() == notify.MAX_WAITING
    sink.start()
    with running(notifier, sim_loop):
        wait_until(lambda: notifier.pending() == 0, "the outbox to empty")
    bodies = sink.bodies()
    assert len(bodies) == notify.MAX_WAITING
    assert bodies[0].startswith(
        f"loadshed: 6 earlier alerts while offline: grid lost {hhmm(T0)}, "
        f"grid back {hhmm(T0 + 60)}, grid lost {hhmm(T0 + 120)}, "
    )
    assert all(len(body) <= SMS_MAX_CHARS for body in bodies)
    assert bodies[1].startswith(f"loadshed: grid lost {hhmm(T0 + 360)} (sent ")
    assert [m["X-Loadshed-Event"] for m in sink.messages[1:]] == [short_id(e.id) for e in storm[6:]]


@pytest.mark.timeout(60)
def test_the_same_event_submitted_twice_is_sent_once(
    smtp_sinks: list[SmtpSink], sim_loop: LoopThread, tmp_path: Path
) -> None:
    sink = SmtpSink().start()
    smtp_sinks.append(sink)
    lost, shed, back, _ = outage()
    notifier = Notifier(tmp_path, make_config(tmp_path, sink), clock=Clock(T0))
    notifier.submit(lost)
    notifier.submit(lost)
    with running(notifier, sim_loop):
        wait_until(lambda: len(sink.messages) == 1, "the first text")
        wait_until(lambda: notifier.pending() == 0, "the outbox to empty")
        notifier.submit(lost)  # again, after it was delivered
        notifier.submit(shed)
        wait_until(lambda: len(sink.messages) == 2, "the second text")
        wait_until(lambda: notifier.pending() == 0, "the outbox to empty")
    restarted = Notifier(tmp_path, make_config(tmp_path, sink), clock=Clock(T0))
    restarted.submit(shed)  # and after a restart
    restarted.submit(back)
    with running(restarted, sim_loop):
        wait_until(lambda: len(sink.messages) == 3, "the third text")
        wait_until(lambda: restarted.pending() == 0, "the outbox to empty")
    assert [m["X-Loadshed-Event"] for m in sink.messages] == [
        short_id(e.id) for e in (lost, shed, back)
    ]


@pytest.mark.timeout(60)
def test_notify_test_reports_each_channel_in_its_own_words(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    down = free_port()
    bad = f"tgram://{APPRISE_TOKEN}/"  # Apprise logs the whole of a URL it cannot parse
    config = make_config(tmp_path, port=down, urls=(receiver.url, bad))
    notifier = Notifier(tmp_path, config)
    assert asyncio.run(notifier.send_test()) == [
        (f"{SMS_TO} via 127.0.0.1:{down}", f"127.0.0.1:{down} refused the connection"),
        (f"json://loadshed:****@127.0.0.1:{receiver.port}/", "sent"),
        ("NOTIFY_URLS entry 2", "Apprise does not understand this tgram:// URL"),
    ]
    assert "Unparseable Telegram URL" in caplog.text
    logging.getLogger("apprise").error("Unparseable URL %s", bad)  # as Apprise does for some
    assert "Unparseable URL ***" in caplog.text
    assert not any(APPRISE_TOKEN in r.getMessage() for r in caplog.records)
    assert receiver.posts[0]["title"] == "loadshed: Test message"
    lonely = Config(
        path=tmp_path / "config.py",
        powerwall=HostPort("127.0.0.1"),
        powerwall_password="x",
        mail_to=SMS_TO,
    )
    assert asyncio.run(Notifier(tmp_path, lonely).send_test()) == [
        (SMS_TO, "SMTP_HOST is not set: no email can be sent")
    ]


@pytest.mark.timeout(30)
def test_a_hung_receiver_costs_one_deadline_and_is_not_piled_on(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("loadshed.notify.notifier.SEND_DEADLINE_S", 0.3)
    receiver.hang = True
    notifier = Notifier(tmp_path, make_config(tmp_path, urls=(receiver.url + "?rto=20&cto=20",)))
    name = notifier.channels[0]
    started = time.monotonic()
    assert asyncio.run(notifier.send_test()) == [(name, "no answer in 0.3 s")]
    assert time.monotonic() - started < 10.0  # our deadline held, not Apprise's 20 s timeout
    [(_, said)] = asyncio.run(notifier.send_test())
    assert said.startswith("stuck: the previous send has run ")  # not a second thread
    receiver.release.set()


def test_without_any_channel_nothing_is_queued_and_it_is_said_once(
    sim_loop: LoopThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loadshed.notify")
    notifier = Notifier(tmp_path, make_config(tmp_path))
    for event in outage():
        notifier.submit(event)
    assert notifier.pending() == 0 and notifier.channels == ()
    assert not (tmp_path / "outbox").exists()
    assert caplog.text.count("no alert channel configured") == 1
    assert asyncio.run(notifier.send_test()) == []
    with running(notifier, sim_loop):  # runs (idle) until cancelled, like with channels
        pass


@pytest.mark.timeout(60)
def test_a_password_is_never_sent_without_tls_but_to_a_loopback_relay_asked_for(
    smtp_sinks: list[SmtpSink], tmp_path: Path
) -> None:
    sink = SmtpSink(auth=True).start()  # no TLS at all
    smtp_sinks.append(sink)
    plain = make_config(tmp_path, sink, starttls=False)
    by_name = replace(plain, smtp_host="localhost")  # a name: could be anywhere
    refused = asyncio.run(Notifier(tmp_path, by_name).send_test())
    assert refused == [
        (
            f"{SMS_TO} via localhost:{sink.port}",
            f"refusing to send SMTP_PASSWORD to localhost:{sink.port} without TLS: use its TLS "
            "port (SMTP_PORT = 465, or SMTP_SSL = True)",
        )
    ]
    assert sink.logins == [] and sink.messages == []  # the password never left
    wanted = replace(by_name, smtp_starttls=True)
    (said,) = asyncio.run(Notifier(tmp_path, wanted).send_test())
    assert said[1].endswith(
        "does not offer STARTTLS: use its TLS port (SMTP_PORT = 465, or "
        "SMTP_SSL = True for another port)"
    )
    assert asyncio.run(Notifier(tmp_path, plain).send_test())[0][1] == "sent"  # 127.0.0.1
    assert sink.logins == ["ok"]


@pytest.mark.timeout(60)
def test_smtp_ssl_is_implicit_tls_on_any_port(
    trust: Tls, smtp_sinks: list[SmtpSink], tmp_path: Path
) -> None:
    sink = SmtpSink(implicit=trust, auth=True).start()
    smtp_sinks.append(sink)
    config = replace(make_config(tmp_path, sink, starttls=False), smtp_ssl=True)
    assert asyncio.run(Notifier(tmp_path, config).send_test())[0][1] == "sent"
    assert sink.logins == ["ok"]


@pytest.mark.timeout(60)
def test_a_non_ascii_password_is_a_clear_error(
    trust: Tls, smtp_sinks: list[SmtpSink], tmp_path: Path
) -> None:
    sink = SmtpSink(starttls=trust, auth=True).start()
    smtp_sinks.append(sink)
    config = make_config(tmp_path, sink, starttls=True, password="pässwörd")
    (said,) = asyncio.run(Notifier(tmp_path, config).send_test())
    assert said[1].startswith("SMTP_USER or SMTP_PASSWORD has characters outside ASCII")


def test_outbox_letters_of_any_wrong_shape_are_set_aside_never_a_crash(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir(mode=0o700)
    odd = {
        "00000001-off_grid.json": "[" * 100_000 + "]" * 100_000,  # nesting too deep
        "00000002-off_grid.json": "[1, 2, 3]",
        "00000003-off_grid.json": '{"version": 1, "items": "not a list"}',
        "00000004-off_grid.json": '{"version": 1, "items": [{"event": 5}]}',
        "00000005-off_grid.json": "\xff\xfe not utf-8",
    }
    for name, text in odd.items():
        (outbox / name).write_bytes(text.encode("latin-1"))
    notifier = Notifier(tmp_path, make_config(tmp_path, None, port=2525))
    assert notifier.pending() == 0
    assert sorted(p.name for p in outbox.iterdir() if p.name.endswith(".bad")) == [
        f"{name}.bad" for name in sorted(odd)
    ]

"""Alerts from `loadshed run` to a real SMTP server (aiosmtpd) and an Apprise json:// receiver.

The whole daemon as a subprocess against the simulated house: what the owner's phone gets.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.notify import SMS_MAX_CHARS, SMTP_LOGIN_REJECTED
from loadshed.sim.house import SimHouse
from tests.e2e.conftest import SHEDDABLE, Loadshed, wait_until
from tests.test_notify import SMTP_PASSWORD, SMTP_USER, Receiver, SmtpSink

pytestmark = pytest.mark.timeout(120)

SMS_ADDRESS = "5551234567@vtext.com"
Start = Callable[..., Loadshed]


def configure(
    config: Path, sink: SmtpSink, urls: tuple[str, ...] = (), password: str = SMTP_PASSWORD
) -> None:
    with config.open("a") as f:
        f.write(
            f"MAILNOTIF = {SMS_ADDRESS!r}\nSMTP_HOST = '127.0.0.1'\nSMTP_PORT = {sink.port}\n"
            f"SMTP_STARTTLS = False\nSMTP_USER = {SMTP_USER!r}\nSMTP_PASSWORD = {password!r}\n"
            f"MAIL_FROM = 'loadshed@example.com'\nNOTIFY_URLS = {list(urls)!r}\n"
        )


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    smtp = SmtpSink(auth=True)
    yield smtp
    smtp.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def queued(outbox: Path) -> list[Path]:
    """The messages waiting in the outbox: complete files named by sequence number (not the
    .tmp of one still being written, which a kill -9 at that moment would lose)."""
    if not outbox.exists():
        return []
    return [p for p in outbox.iterdir() if p.name[0].isdigit() and p.suffix == ".json"]


def outage_cycle(house: SimHouse, daemon: Loadshed) -> None:
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("shed", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    daemon.wait_for_line("shed finished")
    house.restore_grid()
    daemon.wait_for_line("restore finished")


def test_an_outage_cycle_texts_the_owner_in_order(
    house: SimHouse, config: Path, start: Start, sink: SmtpSink, receiver: Receiver
) -> None:
    configure(config, sink.start(), (receiver.url,))
    daemon = start()
    outage_cycle(house, daemon)
    wait_until("four texts", lambda: len(sink.messages) >= 4)
    texts = sink.bodies()
    assert len(texts) == 4
    assert "grid lost" in texts[0] and "battery 80%" in texts[0]
    assert "Shed 4 devices" in texts[1]
    assert "grid back" in texts[2]
    assert "Restored 4 devices" in texts[3]
    assert all(len(t) <= SMS_MAX_CHARS for t in texts)
    assert all(m["To"] == SMS_ADDRESS for m in sink.messages)
    wait_until("the same four on the Apprise channel", lambda: len(receiver.posts) >= 4)
    assert "Space heater" in "\n".join(receiver.messages())
    everything = "\n".join(texts + receiver.messages()) + daemon.output
    assert SMTP_PASSWORD not in everything and house.password not in everything
    assert daemon.stop() == 0


def test_smtp_down_during_the_outage_then_up_delivers_everything_once_in_order(
    house: SimHouse, config: Path, start: Start, sink: SmtpSink, tmp_path: Path
) -> None:
    configure(config, sink)  # configured, not started: the relay is down
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    daemon.wait_for_line("shed finished")
    outbox = tmp_path / "state" / "outbox"
    wait_until(
        f"two alerts queued; loadshed said:\n{daemon.output}", lambda: len(queued(outbox)) >= 2
    )
    sink.start()  # the internet is back
    house.restore_grid()  # a new event wakes the sender at once
    daemon.wait_for_line("restore finished")
    wait_until("four texts", lambda: len(sink.messages) >= 4)
    texts = sink.bodies()
    assert "grid lost" in texts[0] and "grid back" in texts[2]
    assert len(texts) == len(set(texts)) == 4
    wait_until("outbox emptied", lambda: not queued(outbox))
    assert daemon.stop() == 0


def test_kill_9_with_alerts_queued_delivers_them_after_restart(
    house: SimHouse, config: Path, start: Start, sink: SmtpSink, tmp_path: Path
) -> None:
    configure(config, sink)
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    daemon.wait_for_line("shed finished")
    outbox = tmp_path / "state" / "outbox"
    wait_until("queued", lambda: len(queued(outbox)) >= 2)
    daemon.stop(signal.SIGKILL)
    sink.start()
    again = start()
    again.wait_for_line("ready:")
    wait_until(
        f"the two queued texts; loadshed said:\n{again.output}", lambda: len(sink.messages) >= 2
    )
    texts = sink.bodies()
    assert "grid lost" in texts[0] and "Shed 4 devices" in texts[1]
    assert len(texts) == 2  # a restart mid-outage is not a new outage: nothing re-announced


def test_wrong_smtp_password_is_said_plainly_and_apprise_still_delivers(
    house: SimHouse, config: Path, start: Start, sink: SmtpSink, receiver: Receiver
) -> None:
    configure(config, sink.start(), (receiver.url,), password="not-the-smtp-password")
    daemon = start()
    daemon.wait_for_line("ready:")
    house.cut_grid()
    wait_until("Apprise got the alerts", lambda: len(receiver.posts) >= 2)
    daemon.wait_for_line(SMTP_LOGIN_REJECTED)
    assert sink.messages == []
    assert "not-the-smtp-password" not in daemon.output


def test_notify_test_sends_through_every_channel(
    config: Path, tmp_path: Path, sink: SmtpSink, receiver: Receiver
) -> None:
    configure(config, sink.start(), (receiver.url,))
    args = ["notify-test", "--config", str(config), "--state-dir", str(tmp_path / "s")]
    tester = Loadshed(args, tmp_path)
    assert tester.process.wait(60) == 0, tester.output
    assert tester.count(": sent") == 2
    assert "test message" in sink.bodies()[0]
    assert len(receiver.posts) == 1

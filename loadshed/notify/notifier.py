"""The notifier: queues events as messages and delivers them through every channel.

The monitor calls `Notifier.submit(event)`, which only writes its outbox file; `Notifier.run()` is
the sender loop, one independent retrier per channel, so a dead SMTP relay never holds back ntfy.

With no channel configured (neither MAILNOTIF with SMTP_HOST nor NOTIFY_URLS), nothing is queued:
`submit` says so once in the log and the outbox stays empty, because nothing could ever drain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from loadshed.config import Config
from loadshed.logs import redact, redact_secrets
from loadshed.model import Event
from loadshed.notify.channels import Channel, SendError, _channels, _ehlo_name
from loadshed.notify.outbox import OUTBOX_DIR, Letter, Outbox
from loadshed.notify.texts import PREFIX, Note, render_test, short_id

_LOG = logging.getLogger(__name__)

# --- policy numbers ------------------------------------------------------------------------------

RETRY_FIRST_S: Final = 30.0  # first wait after a failed send (the network is often down too)
RETRY_MAX_S: Final = 900.0  # the wait doubles up to this: 15 min between tries in a long outage
SEND_DEADLINE_S: Final = 60.0  # outer bound on one send, whatever the library does (DNS included)

NO_CHANNEL: Final = (
    "no alert channel configured (set MAILNOTIF with SMTP_HOST, or NOTIFY_URLS): "
    "alerts are only logged"
)


# --- the notifier --------------------------------------------------------------------------------


class _RedactRecords(logging.Filter):
    """Mask secrets in the records themselves: Apprise logs a URL it cannot parse whole, and
    urllib3 logs request paths (a Telegram bot token is one), whatever handler takes them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_REDACTED_LOGGERS: Final = ("apprise", "urllib3.connectionpool")


def _redact_library_logs() -> None:
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactRecords) for f in logger.filters):
            logger.addFilter(_RedactRecords())


class Notifier:
    """Queue events as messages and deliver them, in order, through every channel.

    Construction reads `outbox/` (raising LoadshedError only if it cannot be created) and loads
    Apprise's plugins (about half a second, once per process).
    """

    def __init__(
        self, state_dir: Path, config: Config, *, clock: Callable[[], float] = time.time
    ) -> None:
        redact_secrets(config.secrets())
        redact_secrets(s for url in config.notify_urls for s in (url, *_userinfo_secret(url)))
        _redact_library_logs()
        self._clock = clock
        channels, self._problems = _channels(config)
        self._channels: tuple[Channel, ...] = tuple(channels)
        for name, problem in self._problems:
            _LOG.warning("alerts: %s: %s", name, problem)
        self._outbox = (
            Outbox(state_dir / OUTBOX_DIR, [c.key for c in self._channels])
            if self._channels
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakes: dict[str, asyncio.Event] = {}
        # per channel: whether its last send is over, and when it started
        self._busy: dict[str, tuple[threading.Event, float]] = {}
        self._said_no_channel = False

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels, by their privacy names."""
        return tuple(c.name for c in self._channels)

    def pending(self) -> int:
        """Return how many messages wait for at least one channel."""
        return 0 if self._outbox is None else len(self._outbox)

    def submit(self, event: Event) -> None:
        """Queue event for every channel: one file write, never a send. Thread-safe."""
        if self._outbox is None:
            if not self._said_no_channel:
                _LOG.warning("%s", NO_CHANNEL)
                self._said_no_channel = True
            return
        if not self._outbox.add(event):
            _LOG.debug("alert %s already queued or sent", short_id(event.id))
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: run() is over
                loop.call_soon_threadsafe(self._wake_all)

    async def run(self) -> None:
        """Send waiting messages until cancelled; each channel retries on its own, backing off.

        Meant as a task on the monitor's loop. Returns only by cancellation (CancelledError is
        re-raised, as asyncio expects); with no channel it just waits to be cancelled.
        """
        self._loop = asyncio.get_running_loop()
        self._wakes = {c.key: asyncio.Event() for c in self._channels}
        outbox = self._outbox
        tasks = (
            [
                asyncio.create_task(self._drain(c, outbox), name=f"alerts to {c.name}")
                for c in self._channels
            ]
            if outbox is not None
            else []
        )
        try:
            if tasks:
                await asyncio.gather(*tasks)
            else:
                await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop = None

    async def send_test(self) -> list[tuple[str, str]]:
        """Send a test message through every channel now; (privacy name, "sent" or the error).

        Channels that cannot work (a URL Apprise does not know, MAILNOTIF without SMTP_HOST) are
        listed with their problem. Empty when nothing at all is configured.
        """
        note = render_test(self._clock(), _ehlo_name())

        async def one(channel: Channel) -> tuple[str, str]:
            error = await self._attempt(channel, lambda: channel.send(note))
            return channel.name, error or "sent"

        results = await asyncio.gather(*(one(c) for c in self._channels))
        return [*results, *self._problems]

    def _wake_all(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def _drain(self, channel: Channel, outbox: Outbox) -> None:
        wake = self._wakes[channel.key]
        failures = 0
        last_error = ""
        while True:
            wake.clear()
            letter = outbox.next_for(channel.key)
            if letter is None:
                await wake.wait()
                continue
            try:
                note = letter.render(channel.key, self._clock())
            except Exception:  # a bug in a text must not stop the alerts behind it for good
                _LOG.exception("alert outbox: cannot word %s", letter.name)
                said = f"{PREFIX}alert {letter.name} could not be worded (see the log)"
                note = Note(said, said, said, "warning", "")

            def work(letter: Letter = letter, note: Note = note) -> None:
                channel.send(note)
                outbox.taken(channel.key, letter)  # here, so a send that beat its deadline counts

            error = await self._attempt(channel, work)
            if error is None:
                _LOG.info("alert #%s sent to %s", note.ref, channel.name)
                if failures:
                    _LOG.info("alerts reach %s again after %d failed tries", channel.name, failures)
                failures, last_error = 0, ""
                continue
            failures += 1
            pause_s = min(RETRY_FIRST_S * 2 ** min(failures - 1, 16), RETRY_MAX_S)
            level = logging.WARNING if error != last_error else logging.DEBUG
            _LOG.log(
                level,
                "alerts to %s failing: %s (%d waiting; next try in %s s or at the next alert)",
                channel.name,
                error,
                _waiting_for(outbox, channel.key),
                f"{pause_s:g}",
            )
            last_error = error
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    await wake.wait()

    async def _attempt(self, channel: Channel, work: Callable[[], None]) -> str | None:
        """Run work on its own daemon thread within SEND_DEADLINE_S; None or the error."""
        previous = self._busy.get(channel.key)
        if previous is not None and not previous[0].is_set():
            running_s = time.monotonic() - previous[1]
            if running_s > SEND_DEADLINE_S:
                return f"stuck: the previous send has run {running_s:.0f} s"
            return "busy with the previous send"
        finished = threading.Event()  # set by the thread when work is over, before it says so
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()

        def settle(outcome: str | None) -> None:
            if not done.done():
                done.set_result(outcome)

        def target() -> None:
            outcome: str | None
            try:
                work()
                outcome = None
            except SendError as err:
                outcome = redact(str(err))
            except Exception as err:
                _LOG.warning("sending an alert to %s failed", channel.name, exc_info=True)
                outcome = redact(f"unexpected {type(err).__name__}: {err}")
            finished.set()
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, outcome)

        self._busy[channel.key] = (finished, time.monotonic())
        threading.Thread(target=target, name=f"alert-{channel.key}", daemon=True).start()
        try:
            async with asyncio.timeout(SEND_DEADLINE_S):
                return await done
        except TimeoutError:
            return f"no answer in {SEND_DEADLINE_S:g} s"


def _waiting_for(outbox: Outbox, channel: str) -> int:
    """Return how many letters still wait for one channel."""
    return sum(1 for letter in outbox.letters() if letter.needs(channel))


def _userinfo_secret(url: str) -> list[str]:
    """The password part of scheme://user:password@host, found without Apprise."""
    match = re.match(r"^[A-Za-z0-9+.-]+://[^/@:]*:([^/@]+)@", url)
    return [unquote(match.group(1))] if match else []

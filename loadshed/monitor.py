"""The monitor thread: one asyncio loop running the engine, bridged to other threads.

Other threads (the curses UI, the signal handlers of plain mode) talk to it in exactly two
ways: `send(Command)` puts a command on a `queue.Queue` and wakes the loop; `snapshot` reads
the latest immutable `Snapshot`, replaced whole by the engine (no lock needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from loadshed import sdnotify
from loadshed.computers import Computer
from loadshed.config import Config
from loadshed.control import SOCKET_NAME, ControlServer, house_socket
from loadshed.engine import Command, CommandKind, Engine, Snapshot
from loadshed.errors import LoadshedError
from loadshed.model import Event, Grid, GridReading, Status
from loadshed.notify import Notifier
from loadshed.state import StateStore
from loadshed.tuyakeys import start_key_refresh
from loadshed.web import WebServer

_LOG = logging.getLogger(__name__)

FIRST_DECISION_S: Final = 5.0  # on grid at start: devices this long before the first decision
SENDER_RESTART_FIRST_S: Final = 1.0  # a crashed alert sender starts again after this, doubling
SENDER_RESTART_MAX_S: Final = 300.0  # up to every five minutes


class Monitor:
    """Runs an Engine on its own thread until told to quit."""

    def __init__(
        self,
        config: Config,
        store: StateStore | None,
        *,
        computers: Sequence[Computer] = (),
        computers_path: Path = Path("computers.txt"),
        dry_run: bool = False,
        on_event: Callable[[Event], None] | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.store = store
        self.computers = computers
        self.computers_path = computers_path
        self.dry_run = dry_run
        self.on_event = on_event
        self.on_snapshot = on_snapshot
        self.commands: queue.Queue[Command] = queue.Queue()
        self.error: BaseException | None = None
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="monitor")
        self._initial = Snapshot(
            taken_at=0.0,
            reading=GridReading(Grid.UNKNOWN, detail="starting", status=Status.UNREACHABLE),
            dry_run=dry_run,
        )

    @property
    def snapshot(self) -> Snapshot:
        engine = self._engine
        return engine.snapshot if engine is not None else self._initial

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def send(self, command: Command) -> None:
        """Queue a command and wake the loop (from any thread). After the monitor has ended the
        command is dropped: the caller sees `is_alive()` false and `error` say why."""
        self.commands.put(command)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the monitor stopped
                loop.call_soon_threadsafe(wake.set)

    def stop(self) -> None:
        self.send(Command(CommandKind.QUIT))

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread; True once it has ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except LoadshedError as err:
            self.error = err  # said once by whoever started the monitor
        except BaseException as err:
            self.error = err
            _LOG.critical("the monitor stopped: %s", err, exc_info=True)
        finally:
            self._started.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if not self.commands.empty():
            self._wake.set()
        server: ControlServer | None = None

        def publish(snapshot: Snapshot) -> None:
            if server is not None:
                server.publish(snapshot)
            if self.on_snapshot is not None:
                self.on_snapshot(snapshot)

        engine = Engine(
            self.config,
            self.store,
            computers=self.computers,
            computers_path=self.computers_path,
            dry_run=self.dry_run,
            on_event=self.on_event or (self.notifier.submit if self.notifier else None),
            on_snapshot=publish,
        )
        self._engine = engine
        # Tuya local keys from the cloud: the cached ones now, a refresh at start and daily.
        state_dir = self.store.dir if self.store is not None else None
        keys = start_key_refresh(engine.registry, self.config, state_dir)
        if self.store is not None:  # a dry run has no state dir, and claims no house
            server = ControlServer(
                engine,
                [self.store.dir / SOCKET_NAME, house_socket(str(self.config.powerwall))],
                {"state_dir": str(self.store.dir), "house": str(self.config.powerwall)},
            )
            try:
                await server.start()
            except OSError as err:  # no screen but this one then; never a reason not to shed
                _LOG.error(
                    "cannot open the control socket (%s): status and attach will not work", err
                )
                server = None
        # The phone page starts beside the engine, never before it: a slow name lookup delays
        # nobody, and a page that cannot be served is only logged.
        page = asyncio.create_task(_serve_the_page(engine, self.config))
        self._started.set()
        # The sender shares the loop but never the poll's path: submit() only writes a file.
        notifier = self.notifier
        sender = asyncio.create_task(_keep_sending(notifier)) if notifier is not None else None
        systemd = sdnotify.Notifier()
        watchdog: asyncio.Task[None] | None = None
        try:
            await engine.start(first_decision_s=FIRST_DECISION_S)
            systemd.send(f"READY=1\nSTATUS=watching the Powerwall at {self.config.powerwall}")
            watchdog = asyncio.create_task(systemd.watch(engine.polling))
            await engine.run(self.commands, self._wake)
        finally:
            systemd.send("STOPPING=1")
            if watchdog is not None:
                watchdog.cancel()
            if keys is not None:
                keys.cancel()
            if server is not None:
                await server.close()
            await _close_the_page(page)
            await engine.close()
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)


async def _serve_the_page(engine: Engine, config: Config) -> WebServer | None:
    """The phone page, when WEB_LISTEN asks for it; None when not, or when it cannot be served
    (said once, loudly): never a reason not to shed."""
    if config.web_listen is None:
        return None
    web = WebServer(engine, config.web_listen, config.web_token)
    try:
        await web.start()
    except OSError as err:
        _LOG.error(
            "cannot serve the phone page on %s (%s): shedding goes on", config.web_listen, err
        )
        return None
    except Exception:
        _LOG.error("the phone page failed to start; shedding goes on", exc_info=True)
        return None
    return web


async def _close_the_page(page: asyncio.Task[WebServer | None]) -> None:
    page.cancel()  # still starting: stop there
    with contextlib.suppress(asyncio.CancelledError):
        web = await page
        if web is not None:
            await web.close()


async def _keep_sending(notifier: Notifier) -> None:
    """Run the alert sender for good: if it dies of a bug, say so loudly and start it again."""
    pause = SENDER_RESTART_FIRST_S
    while True:
        try:
            await notifier.run()
            return
        except Exception:
            _LOG.critical("the alert sender stopped on a bug; restarting it", exc_info=True)
        await asyncio.sleep(pause)
        pause = min(pause * 2, SENDER_RESTART_MAX_S)

"""The curses screen: paint `view.render`'s lines, read keys, and wake only when there is news.

Owns the terminal while the screen is up: one context manager enters curses and always leaves it
(endwin), whatever happens; a self-pipe that the monitor's `on_snapshot` and the signal handlers
write a byte to; the signal handlers while the screen is up (a resize repaints; SIGTERM, SIGINT
and SIGHUP quit cleanly). Runs in the main thread; the monitor runs the engine in its own, and the
two meet only through `Monitor.send` (commands) and `Monitor.snapshot` (immutable snapshots).

A terminal that cannot draw the screen (TERM=dumb, unknown to terminfo, smaller than the
screen's least) is found out before curses takes it (`why_no_screen`): `run_ui` then raises
`CannotDraw`, whose one sentence says why, and the caller goes on in plain lines.

Must not: decide anything (view.py says what is drawn and what each key does); reach the engine
except through the monitor; spin: between events it blocks in select() for seconds.
"""

from __future__ import annotations

import contextlib
import curses
import locale
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from types import FrameType
from typing import Final

from loadshed import view
from loadshed.engine import QUIT_WAIT_S, Snapshot
from loadshed.errors import ExitCode, LoadshedError
from loadshed.monitor import Monitor

TICK_S: Final = 1.0  # while a countdown is on screen, redraw this often
IDLE_S: Final = 5.0  # otherwise at least this often: the clock, and whether the monitor lives
ESCAPE_DELAY_MS: Final = 25  # Esc alone, told apart from the start of an arrow key's sequence
STOP_WAIT_S: Final = QUIT_WAIT_S + 5.0  # after q: switches in flight finish, the state is written
DEAD_INPUT_WAKES: Final = 50  # stdin readable this often in a row with no key: the terminal is gone

KEY_NAMES: Final[Mapping[int, str]] = {
    curses.KEY_UP: "up",
    curses.KEY_DOWN: "down",
    curses.KEY_HOME: "home",
    curses.KEY_END: "end",
    curses.KEY_PPAGE: "home",
    curses.KEY_NPAGE: "end",
    curses.KEY_ENTER: "enter",
}
CHAR_NAMES: Final[Mapping[str, str]] = {"\x1b": "escape", "\n": "enter", "\r": "enter"}
QUIT_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

DemoKeys = Mapping[str, Callable[[], str]]  # a demo key's first name → do it, say what was done


class CannotDraw(LoadshedError):
    """This terminal cannot show the screen. str(): one sentence why; nothing was started."""


def why_no_screen(env: Mapping[str, str] = os.environ, fd: int | None = None) -> str | None:
    """Why the terminal on fd (stdout) cannot draw the screen, in one sentence; None if it can.

    Reads the terminal's terminfo entry (can it move the cursor?) and its size; it does not
    take the terminal over. curses reads terminfo once per process: a later call answers for
    the first TERM asked about.
    """
    fd = _stdout_fd() if fd is None else fd
    term = env.get("TERM", "")
    if not term:
        return "this terminal cannot draw the screen (TERM is not set)"
    try:
        curses.setupterm(term, fd)
    except curses.error:
        return f"this terminal cannot draw the screen (TERM={term} is not in terminfo)"
    if not curses.tigetstr("cup"):
        return f"this terminal cannot draw the screen (TERM={term} cannot move the cursor)"
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None  # no size to read (not a terminal): curses will say, and be caught
    if size.columns < view.MIN_WIDTH or size.lines < view.MIN_HEIGHT:
        return (
            f"this terminal is {size.columns}x{size.lines}, "
            f"too small for the screen ({view.MIN_WIDTH}x{view.MIN_HEIGHT})"
        )
    return None


def run_ui(
    monitor: Monitor,
    *,
    demo_keys: DemoKeys | None = None,
    demo_info: Callable[[], view.Demo] | None = None,
    capacity_wh: float | None = None,
    env: Mapping[str, str] = os.environ,
    attached: bool = False,
) -> int:
    """Start the monitor (not started yet), show the screen until q, stop the monitor.

    Returns 0 after q or a quit signal, 1 when the monitor stopped by itself (its `error` says
    why). Raises CannotDraw, the monitor not started, when this terminal cannot show the screen
    (`why_no_screen`, or curses refusing it). `demo_keys` handles the demo's extra keys
    (view.KEYS names them), `demo_info` feeds the demo's header, `capacity_wh` the time-left
    estimate (None: view.POWERWALL_2_WH, said so). `attached`: the monitor stands for a loadshed
    running elsewhere, which q leaves running (the question says so).
    """
    if monitor.is_alive():
        raise RuntimeError("run_ui starts the monitor itself, after its wake-up is wired")
    why = why_no_screen(env)
    if why is not None:
        raise CannotDraw(why)
    colour = view.wants_colour(env)
    ui = view.UiState(
        capacity_wh=capacity_wh,
        unicode=not view.ascii_only(locale.getpreferredencoding(False)),
        attached=attached,
    )
    wake = _Wake()
    previous = monitor.on_snapshot

    def on_snapshot(snap: Snapshot) -> None:  # on the monitor thread: only a byte in a pipe
        if previous is not None:
            previous(snap)
        wake.poke()

    monitor.on_snapshot = on_snapshot
    try:
        with _Signals(wake) as signals, _screen(colour) as scr:
            screen = _Screen(scr, colour)
            try:
                monitor.start()
                return _loop(monitor, screen, signals, wake, ui, demo_keys or {}, demo_info)
            finally:
                if monitor.is_alive():
                    monitor.stop()
                    monitor.join(STOP_WAIT_S)
    finally:
        monitor.on_snapshot = previous
        wake.close()


def _loop(
    monitor: Monitor,
    screen: _Screen,
    signals: _Signals,
    wake: _Wake,
    ui: view.UiState,
    demo_keys: DemoKeys,
    demo_info: Callable[[], view.Demo] | None,
) -> int:
    stdin = sys.stdin.fileno()
    idle_input = 0
    while True:
        if signals.stop:
            return _quit(monitor, screen, replace(ui, quitting=True, confirm=None, help=False))
        if not monitor.is_alive():
            return ExitCode.FAILURE
        if signals.resized:
            signals.resized = False
            screen.resize()
        if demo_info is not None:
            ui = replace(ui, demo=demo_info())
        snap = monitor.snapshot
        ui = view.follow(ui, snap)
        screen.draw(snap, ui)
        pending = snap.restore_at is not None or snap.shed_at is not None or not snap.started
        readable, _, _ = select.select([wake.fd, stdin], [], [], TICK_S if pending else IDLE_S)
        wake.drain()
        if stdin not in readable:
            continue
        keys = screen.keys()
        idle_input = 0 if keys or signals.resized else idle_input + 1
        if idle_input > DEAD_INPUT_WAKES:
            signals.stop = "the terminal closed"
        for key in keys:
            if key == "resize":  # curses saw it first; not a key for the view
                signals.resized = True
                continue
            result = view.handle_key(key, ui, monitor.snapshot)
            ui = result.ui
            if result.command is not None:
                monitor.send(result.command)
            if result.demo is not None and result.demo in demo_keys:
                ui = replace(ui, message=demo_keys[result.demo]())
            if result.quit:
                return _quit(monitor, screen, ui)


def _quit(monitor: Monitor, screen: _Screen, ui: view.UiState) -> int:
    """Say "stopping" while switches in flight finish and the state is written."""
    screen.draw(monitor.snapshot, ui)
    monitor.stop()
    monitor.join(STOP_WAIT_S)
    return ExitCode.OK


class _Screen:
    """The curses window: paints lines (curses sends only what changed) and reads keys."""

    def __init__(self, scr: curses.window, colour: bool) -> None:
        self.scr = scr
        self.colour = colour and curses.has_colors()
        self._pairs: dict[str, int] = {}
        self._attrs: dict[view.Look, int] = {}
        self._background = -1
        if self.colour:
            curses.start_color()
            try:
                curses.use_default_colors()
            except curses.error:
                self._background = curses.COLOR_BLACK

    def draw(self, snap: Snapshot, ui: view.UiState) -> None:
        height, width = self.scr.getmaxyx()
        self.paint(view.render(snap, ui, width, height, now=time.time()))

    def paint(self, lines: list[view.Line]) -> None:
        # erase + noutrefresh + doupdate: curses compares with what is on the terminal and
        # sends only the difference, so nothing flickers and an idle screen sends nothing.
        scr = self.scr
        scr.erase()
        height, width = scr.getmaxyx()
        for y, line in enumerate(lines[:height]):
            for x, text, look in view.segments(line, self.colour):
                if x >= width:
                    break
                with contextlib.suppress(curses.error):  # the last cell: written, then refused
                    scr.addstr(y, x, text[: width - x], self._attr(look))
        scr.noutrefresh()
        curses.doupdate()

    def _attr(self, look: view.Look) -> int:
        attr = self._attrs.get(look)
        if attr is None:
            attr = curses.A_NORMAL
            for wanted, bit in (
                (look.bold, curses.A_BOLD),
                (look.reverse, curses.A_REVERSE),
                (look.underline, curses.A_UNDERLINE),
                (look.dim, curses.A_DIM),
            ):
                if wanted:
                    attr |= bit
            if look.colour is not None and self.colour:
                attr |= curses.color_pair(self._pair(look.colour))
            self._attrs[look] = attr
        return attr

    def _pair(self, colour: str) -> int:
        pair = self._pairs.get(colour)
        if pair is None:
            pair = len(self._pairs) + 1
            curses.init_pair(pair, getattr(curses, f"COLOR_{colour.upper()}"), self._background)
            self._pairs[colour] = pair
        return pair

    def keys(self) -> list[str]:
        """Every key waiting, by view.KEYS's names; "resize" for a resize curses saw."""
        keys: list[str] = []
        while True:
            try:
                got = self.scr.get_wch()
            except curses.error:  # nothing more waiting (nodelay)
                return keys
            if isinstance(got, str):
                keys.append(CHAR_NAMES.get(got, got))
            elif got == curses.KEY_RESIZE:
                keys.append("resize")
            elif got in KEY_NAMES:
                keys.append(KEY_NAMES[got])

    def resize(self) -> None:
        """Take the terminal's new size (SIGWINCH is ours, so curses is told here)."""
        try:
            size = os.get_terminal_size(_stdout_fd())
        except OSError:
            return
        curses.resizeterm(size.lines, size.columns)


@contextlib.contextmanager
def _screen(colour: bool) -> Iterator[curses.window]:
    """Enter curses; leave it (endwin) however the block ends, the terminal as it was."""
    try:
        scr = curses.initscr()
    except curses.error as err:
        term = os.environ.get("TERM", "")
        raise CannotDraw(f"this terminal cannot draw the screen (TERM={term}: {err})") from err
    try:
        curses.noecho()
        curses.cbreak()
        scr.keypad(True)
        scr.nodelay(True)
        curses.set_escdelay(ESCAPE_DELAY_MS)
        with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor
            curses.curs_set(0)
        yield scr
    finally:
        with contextlib.suppress(curses.error):
            scr.keypad(False)
            curses.nocbreak()
            curses.echo()
        curses.endwin()


def _stdout_fd() -> int:
    return sys.__stdout__.fileno() if sys.__stdout__ is not None else 1


class _Wake:
    """A self-pipe: any thread, or a signal handler, writes a byte; select() sees it."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._closed = False

    def poke(self) -> None:
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # full: a wake is already waiting
                os.write(self._write, b".")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self._write)
            os.close(self.fd)


class _Signals:
    """While the screen is up: a resize wakes the loop to repaint, a quit signal stops it."""

    def __init__(self, wake: _Wake) -> None:
        self.wake = wake
        self.resized = False
        self.stop = ""  # why the loop must stop, or ""
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGWINCH, *QUIT_SIGNALS):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGWINCH:
            self.resized = True
        else:
            self.stop = signal.Signals(signum).name
        self.wake.poke()

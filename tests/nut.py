"""The real NUT server for tests: Debian's dummy-ups driver and upsd, on 127.0.0.1, private.

`NutServer` writes a config dir (ups.conf, upsd.conf, upsd.users and the driver's .dev file)
and a state dir (NUT_STATEPATH: the driver's socket) under a fresh temporary directory, starts
/lib/nut/dummy-ups and /lib/nut/upsd in the foreground (-F) as children of the test process,
and changes the UPS's variables with NUT's own `upsrw`, waiting until `upsc` shows the new
value (upsd passes a SET to the driver and answers OK before the driver has applied it).
Nothing reads /etc/nut or writes /run/nut; every server has its own port and dirs, so xdist
workers do not collide.

As root (CI), both daemons get `-u root`: by default they drop to the `nut` user, who could not
read the private 0700 dirs. As anyone else they run as that user.

Use it as the `nut_server` fixture (function-scoped; import `nut_server_fixture` from here to
register it, as tests/drivers/test_nut.py does) or as `with NutServer() as nut: ...`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest

UPSD: Final = Path("/lib/nut/upsd")  # the real daemon: /usr/sbin/upsd is Debian's wrapper
DRIVER: Final = Path("/lib/nut/dummy-ups")
UPSC: Final = "upsc"
UPSRW: Final = "upsrw"
HOST: Final = "127.0.0.1"
UPS_NAME: Final = "ups"
USER: Final = "loadshed"  # may log in as upsmon secondary, SET variables and run commands
PASSWORD: Final = "nut-Secret-5e1f9"  # tests assert it never appears in a log
SET_ONLY_USER: Final = "setter"  # same password; may SET, but not log in as upsmon does
VARIABLES: Final[dict[str, str]] = {  # the .dev file; dummy-ups lets upsrw change each of them
    "ups.status": "OL",
    "battery.charge": "100",
    "battery.runtime": "1800",
    "ups.load": "23",
}
READY_TIMEOUT_S: Final = 15.0  # longest wait for the driver's socket, or for upsd to answer
CHANGE_TIMEOUT_S: Final = 10.0  # longest wait for a SET to show in upsc
STOP_TIMEOUT_S: Final = 5.0  # SIGTERM, then SIGKILL after this long
TOOL_TIMEOUT_S: Final = 10.0  # one upsc or upsrw run
POLL_S: Final = 0.02  # between readiness polls
PORT_TRIES: Final = 5  # free ports tried when another process takes ours first
NOT_INSTALLED: Final = (
    "the NUT server is not installed ({missing} not found): `bash scripts/test` installs "
    "nut-server and nut-client"
)


class NutServerError(RuntimeError):
    """The NUT server would not start, or a change did not show."""


def missing_tools() -> str | None:
    """Return why the NUT server cannot run here, or None when it can."""
    for tool in (str(UPSD), str(DRIVER), UPSC, UPSRW):
        if shutil.which(tool) is None:
            return NOT_INSTALLED.format(missing=tool)
    return None


class NutServer:
    """One dummy UPS served by a private upsd on 127.0.0.1; stop() kills and reaps both."""

    def __init__(self, variables: Mapping[str, str | None] | None = None) -> None:
        """variables: overrides of VARIABLES for the .dev file; None leaves one out."""
        merged = {**VARIABLES, **(variables or {})}
        self.variables = {name: value for name, value in merged.items() if value is not None}
        self.dir = Path(tempfile.mkdtemp(prefix="loadshed-nut-"))
        self.conf_dir = self.dir / "conf"
        self.state_dir = self.dir / "state"
        self.port = 0
        self.driver: subprocess.Popen[bytes] | None = None
        self.upsd: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0  # how long start() took, for the report
        self.env = {
            **os.environ,
            "NUT_CONFPATH": str(self.conf_dir),
            "NUT_STATEPATH": str(self.state_dir),
            "NUT_ALTPIDPATH": str(self.state_dir),
        }

    @property
    def target(self) -> str:
        """The UPS as NUT's tools name it: "ups@127.0.0.1:port"."""
        return f"{UPS_NAME}@{HOST}:{self.port}"

    def __enter__(self) -> NutServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NutServer:
        """Write the config, start the driver and upsd; return once upsd serves the UPS."""
        started = time.monotonic()
        try:
            self._write_config()
            for _ in range(PORT_TRIES):
                self.port = _free_port()
                _write(self.conf_dir / "upsd.conf", f"LISTEN {HOST} {self.port}\n")
                if self._start_daemons():
                    break
            else:
                raise NutServerError(f"upsd found no free port in {PORT_TRIES} tries")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop_serving(self) -> None:
        """Stop upsd and its driver, keeping port and dirs: clients see their connections
        close, then new ones refused.

        The driver goes too: NUT 2.8.0's dummy-ups aborts ("bit out of range 0 - FD_SETSIZE on
        fd_set") at its next broadcast once the upsd it served has gone.
        """
        upsd, self.upsd = self.upsd, None
        _end(upsd)
        self.stop_driver()

    def stop_driver(self) -> None:
        """Stop the UPS's driver only; return once upsd, still up, has noticed (until then it
        serves the driver's last values) and answers ERR DRIVER-NOT-CONNECTED."""
        driver, self.driver = self.driver, None
        _end(driver)
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while self.upsd is not None and self.get_var("ups.status") is not None:
            if time.monotonic() > deadline:
                raise NutServerError(f"upsd still serves ups.status {CHANGE_TIMEOUT_S:g} s on")
            time.sleep(POLL_S)

    def resume(self) -> None:
        """Start the driver and upsd again on the same port, as after a reboot of the NUT
        server: the variables are the .dev file's again (upsrw's changes are gone)."""
        if self.upsd is not None or self.driver is not None:
            raise NutServerError("the NUT server is already running")
        if not self._start_daemons():
            raise NutServerError(f"port {self.port} was taken while upsd was stopped")

    def stop(self) -> None:
        """Kill and reap upsd and the driver; remove the private dirs. Safe to call twice."""
        self.stop_serving()
        shutil.rmtree(self.dir, ignore_errors=True)

    def set_status(self, status: str) -> None:
        """Set ups.status ("OL", "OB", "OB LB") with upsrw; return once upsc shows it."""
        self.set_var("ups.status", status)

    def set_var(self, name: str, value: str) -> None:
        """Set a variable of the .dev file with upsrw; return once upsc shows it."""
        done = self._run([UPSRW, "-s", f"{name}={value}", "-u", USER, "-p", PASSWORD, self.target])
        if done.returncode != 0:
            raise NutServerError(f"upsrw {name}={value!r} failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while (shown := self.get_var(name)) != value:
            if time.monotonic() > deadline:
                raise NutServerError(
                    f"{name} is {shown!r}, not {value!r}, {CHANGE_TIMEOUT_S:g} s after upsrw"
                )
            time.sleep(POLL_S)

    def get_var(self, name: str) -> str | None:
        """Return a variable as upsc reads it now; None when upsc cannot."""
        done = self._upsc(name)
        return done.stdout.strip() if done.returncode == 0 else None

    def log(self, name: str) -> str:
        """Return a daemon's log so far ("upsd.log", "driver.log")."""
        try:
            return (self.dir / name).read_text(errors="replace")
        except OSError:
            return ""

    def _write_config(self) -> None:
        # mkdtemp made self.dir 0700 and ours; the daemons run as us, so they can read it.
        self.conf_dir.mkdir(mode=0o700)
        self.state_dir.mkdir(mode=0o700)
        dev = self.conf_dir / f"{UPS_NAME}.dev"
        _write(dev, "".join(f"{name}: {value}\n" for name, value in self.variables.items()))
        _write(
            self.conf_dir / "ups.conf",
            f'[{UPS_NAME}]\n  driver = dummy-ups\n  port = {dev}\n  desc = "loadshed test UPS"\n',
        )
        _write(
            self.conf_dir / "upsd.users",
            f"[{USER}]\n  password = {PASSWORD}\n  actions = SET\n  instcmds = ALL\n"
            f"  upsmon secondary\n[{SET_ONLY_USER}]\n  password = {PASSWORD}\n  actions = SET\n",
        )

    def _start_daemons(self) -> bool:
        """Start the driver, then upsd on self.port; wait until upsd serves the UPS.

        Return False when upsd could not listen (another process took the port first).
        """
        socket_path = self.state_dir / f"dummy-ups-{UPS_NAME}"
        socket_path.unlink(missing_ok=True)  # a stopped driver leaves it behind
        self.driver = self._spawn("driver.log", str(DRIVER), "-a", UPS_NAME)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not socket_path.exists():
            if self.driver.poll() is not None or time.monotonic() > deadline:
                raise NutServerError(f"dummy-ups did not start:\n{self.log('driver.log')}")
            time.sleep(POLL_S)
        logged = len(self.log("upsd.log"))
        self.upsd = self._spawn("upsd.log", str(UPSD))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready():
            if self.upsd.poll() is not None:
                said = self.log("upsd.log")[logged:]
                self.stop_serving()
                if "no listening interface" in said:
                    return False
                raise NutServerError(f"upsd exited at start:\n{said}")
            if time.monotonic() > deadline:
                raise NutServerError(
                    f"upsd did not serve {self.target} in {READY_TIMEOUT_S:g} s:\n"
                    f"{self.log('upsd.log')[logged:]}\n{self.log('driver.log')}"
                )
            time.sleep(POLL_S)
        return True

    def _spawn(self, log_name: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start a daemon in the foreground (-F), its output appended to log_name."""
        with (self.dir / log_name).open("ab") as log:
            return subprocess.Popen(
                [*argv, "-F", *_user_args()],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _ready(self) -> bool:
        """upsd lists every variable as writable (the driver sends those flags about a second
        after its values) and the status is past the driver's start-up WAIT."""
        listing = self._run([UPSRW, self.target])
        if listing.returncode != 0:
            return False
        if any(f"[{name}]" not in listing.stdout for name in self.variables):
            return False
        return "ups.status" not in self.variables or self.get_var("ups.status") not in {
            None,
            "WAIT",
        }

    def _upsc(self, name: str) -> subprocess.CompletedProcess[str]:
        return self._run([UPSC, self.target, name])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )


@pytest.fixture(name="nut_server")
def nut_server_fixture() -> Iterator[NutServer]:
    """A fresh NUT server serving UPS "ups" on line (OL); skipped where NUT is not installed."""
    reason = missing_tools()
    if reason is not None:
        pytest.skip(reason)
    with NutServer() as server:
        yield server


def _user_args() -> list[str]:
    """As root, keep the daemons root: their default `nut` user cannot read our 0700 dirs."""
    return ["-u", "root"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate proc (SIGTERM, then SIGKILL) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)

"""A Tuya plug paired again in its app: `loadshed check` and `loadshed run` as subprocesses
against the simulated house and the loopback stand-in for the Tuya cloud.

The subprocesses reach the stand-in through LOADSHED_TUYA_CLOUD_HOST and trust its CA through
REQUESTS_CA_BUNDLE, both in their own environment only. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadshed.sim.base import Fault
from loadshed.sim.house import SimHouse
from loadshed.sim.loop import LoopThread
from loadshed.sim.tuyacloud import TuyaCloudSim, for_house, pair_again
from loadshed.tuyacloud import KEYS_FILE
from tests.e2e.conftest import SHEDDABLE, Loadshed, wait_until

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., Loadshed]
CHECK_TIMEOUT_S = 60
KEY_CHANGED = "local key changed in the Tuya cloud: using the new one (cached in the state dir)"


@pytest.fixture
def cloud(house: SimHouse, sim_loop: LoopThread) -> Iterator[TuyaCloudSim]:
    sim = for_house(house)
    sim_loop.run(sim.start())
    yield sim
    sim_loop.run(sim.stop())


@pytest.fixture
def cloud_env(cloud: TuyaCloudSim) -> dict[str, str]:
    """What points a loadshed subprocess at the stand-in (and only that process)."""
    return {
        "LOADSHED_TUYA_CLOUD_HOST": cloud.urlhost,
        "REQUESTS_CA_BUNDLE": str(cloud.ca_file),
        "NO_PROXY": "127.0.0.1",
    }


@pytest.fixture
def with_cloud(config: Path, house: SimHouse, cloud: TuyaCloudSim, tmp_path: Path) -> Path:
    """The house's config.py with the cloud credentials and the tests' state dir."""
    with config.open("a") as f:
        f.write(
            f"TUYAAPIKEY = {cloud.api_key!r}\nTUYAAPISECRET = {cloud.api_secret!r}\n"
            f"TUYAAPIDEVICEID = {house.tuya[0].dev_id!r}\n"
            f"STATE_DIR = {str(tmp_path / 'state')!r}\n"
        )
    return config


def check(config: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOADSHED_")} | env
    return subprocess.run(
        [sys.executable, "-m", "loadshed", "check", "--config", str(config)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )


def cached(tmp_path: Path) -> dict[str, dict[str, object]]:
    devices: dict[str, dict[str, object]] = json.loads(
        (tmp_path / "state" / KEYS_FILE).read_text()
    )["devices"]
    return devices


def test_check_fetches_a_changed_key_and_run_switches_the_plug_off_with_it_offline(
    house: SimHouse,
    cloud: TuyaCloudSim,
    cloud_env: dict[str, str],
    with_cloud: Path,
    start: Start,
    sim_loop: LoopThread,
    tmp_path: Path,
) -> None:
    old_key = house.tuya[0].key
    new_key = pair_again(house, cloud, "Space heater")

    result = check(with_cloud, tmp_path, cloud_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Space heater: {KEY_CHANGED}" in result.stdout
    path = tmp_path / "state" / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cached(tmp_path)[house.tuya[0].dev_id]["key"] == new_key
    said = result.stdout + result.stderr
    assert new_key not in said and old_key not in said and cloud.api_secret not in said

    # The outage takes the internet with it: the daemon has only the cached key.
    sim_loop.run(cloud.set_fault(Fault.DOWN))
    daemon = start(env=cloud_env)
    daemon.wait_for_line("ready: 9 devices (2 essential), on grid")
    house.cut_grid()
    wait_until("every sheddable plug off", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert daemon.stop() == 0
    assert "Space heater: using the local key fetched from the Tuya cloud" in daemon.output
    assert "Space heater: off" in (tmp_path / "state" / "events.log").read_text()
    assert new_key not in daemon.output and cloud.api_secret not in daemon.output


def test_run_refreshes_the_keys_at_start(
    house: SimHouse,
    cloud: TuyaCloudSim,
    cloud_env: dict[str, str],
    with_cloud: Path,
    start: Start,
    tmp_path: Path,
) -> None:
    new_key = pair_again(house, cloud, "Space heater")
    daemon = start(env=cloud_env)
    daemon.wait_for_line("Space heater: using the local key fetched from the Tuya cloud")
    daemon.wait_for_line("ready: 9 devices")
    assert cached(tmp_path)[house.tuya[0].dev_id]["key"] == new_key
    house.cut_grid()
    wait_until("the space heater off", lambda: not house.is_on("Space heater"))
    assert daemon.stop() == 0
    assert new_key not in daemon.output and cloud.api_secret not in daemon.output


def test_a_hung_cloud_never_delays_the_daemon(
    house: SimHouse,
    cloud: TuyaCloudSim,
    cloud_env: dict[str, str],
    with_cloud: Path,
    start: Start,
    sim_loop: LoopThread,
) -> None:
    sim_loop.run(cloud.set_fault(Fault.HUNG))
    daemon = start(env=cloud_env)
    daemon.wait_for_line("ready: 9 devices (2 essential), on grid", timeout_s=10)
    house.cut_grid()
    wait_until("every sheddable plug off", lambda: not any(house.is_on(n) for n in SHEDDABLE))
    assert daemon.stop() == 0  # a parked cloud thread does not hold the exit


def test_check_without_cloud_credentials_names_the_plug_and_how_to_get_its_key(
    house: SimHouse, cloud: TuyaCloudSim, config: Path, tmp_path: Path
) -> None:
    new_key = pair_again(house, cloud, "Space heater")
    result = check(config, tmp_path, {})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("Space heater  "))
    detail = lines[row + 1]
    assert "wrong local key for 'Space heater'" in detail
    assert "loadshed discover --show-keys" in detail and "tinytuya's wizard" in detail
    assert new_key not in result.stdout

"""The state dir: state.json damaged in every way we know, a newer version, a deleted dir, a
failed write, and the modes of events.log and its rotated copies."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from loadshed.errors import ConfigError, LoadshedError
from loadshed.model import Kind, Pin, Power
from loadshed.state import EVENTS_FILE, STATE_FILE, ShedEntry, State, StateStore

WALL = 1_796_000_000.0  # when the tests "load": names the copy of a damaged file
STAMP = time.strftime("%Y%m%d-%H%M%S", time.localtime(WALL))
ASIDE = f"{STATE_FILE}.corrupt-{STAMP}"
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it


def _entry(**changes: Any) -> dict[str, Any]:
    """One shed entry as this loadshed writes it."""
    entry: dict[str, Any] = {
        "kind": "kasa",
        "address": "192.0.2.20",
        "reason": "off-grid",
        "at": 1_795_999_000.0,
        "prior": "on",
        "confirmed": True,
        "attempts": 1,
        "last_error": "",
        "off_at": 1_795_999_010.0,
    }
    entry.update(changes)
    return entry


def _doc(**changes: Any) -> dict[str, Any]:
    """A whole state.json: NAS plug and TV shed, Heater kept off, a forced shed holding."""
    doc: dict[str, Any] = {
        "version": 1,
        "hold": True,
        "paused": False,
        "pins": {"Heater": "off"},
        "shed": {"NAS plug": _entry(), "TV": _entry(address="192.0.2.21")},
    }
    doc.update(changes)
    return doc


def _text(doc: dict[str, Any], **raw: str) -> str:
    """doc as loadshed writes it, each "@name@" string then replaced by the raw text given."""
    text = json.dumps(doc, indent=2, sort_keys=True)
    for name, replacement in raw.items():
        text = text.replace(f'"@{name}@"', replacement)
    return text


NAS = ShedEntry(
    name="NAS plug",
    kind=Kind.KASA,
    address="192.0.2.20",
    reason="off-grid",
    at=1_795_999_000.0,
    prior=Power.ON,
    confirmed=True,
    attempts=1,
    off_at=1_795_999_010.0,
)
TV = ShedEntry(
    name="TV",
    kind=Kind.KASA,
    address="192.0.2.21",
    reason="off-grid",
    at=1_795_999_000.0,
    prior=Power.ON,
    confirmed=True,
    attempts=1,
    off_at=1_795_999_010.0,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore(tmp_path / "state", wall=lambda: WALL)
    opened.open()
    yield opened
    opened.close()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, which would leave new files readable by everyone."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- a whole file, and one from before some fields existed -----------------------------------


def test_what_is_saved_loads_back_unchanged(store: StateStore) -> None:
    state = State(
        shed={"NAS plug": NAS, "Mac": replace_prior_unknown()},
        hold=True,
        paused=True,
        pins={"Heater": Pin.OFF, "Fridge": Pin.ON},
    )
    store.save(state)
    assert store.load() == state
    assert store.problems == []
    assert _mode(store.path) == 0o600


def replace_prior_unknown() -> ShedEntry:
    return ShedEntry(
        name="Mac",
        kind=Kind.MACOS,
        address="mac.local",
        reason="battery 28% < 30%",
        at=1_795_999_000.5,
        prior=None,  # written as "unknown"
        attempts=2,
        last_error="no answer in 5 s",
        off_at=None,  # written as null
    )


def test_a_file_without_the_later_fields_loads_whole(store: StateStore) -> None:
    entry = {k: v for k, v in _entry().items() if k not in ("attempts", "last_error", "off_at")}
    assert _entry()["last_error"] == ""
    doc = {k: v for k, v in _doc(shed={"NAS plug": entry}).items() if k != "pins"}
    store.path.write_text(json.dumps(doc))
    state = store.load()
    assert state.shed == {"NAS plug": replace(NAS, attempts=0, off_at=None)}
    assert store.problems == []
    assert store.path.exists()


# --- a file that cannot be read whole -------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    data: bytes
    reason: str  # in the problem line
    shed: dict[str, ShedEntry] = field(default_factory=lambda: {"NAS plug": NAS, "TV": TV})
    pins: dict[str, Pin] = field(default_factory=lambda: {"Heater": Pin.OFF})
    hold: bool = True
    told: str = "It recorded NAS plug, TV as switched off"


def _damage(doc: dict[str, Any], reason: str, **kept: Any) -> Damage:
    return Damage(json.dumps(doc, indent=2, sort_keys=True).encode(), reason, **kept)


def _raw(text: str, reason: str, **kept: Any) -> Damage:
    return Damage(text.encode(), reason, **kept)


WHOLE = _text(_doc()).encode()
NOTHING = "Nothing could be read of what it recorded as switched off"


def _cases() -> list[Any]:
    one_bad = {"shed": {"NAS plug": NAS}}
    cases = [
        pytest.param(
            Damage(
                _text(_doc(shed={"NAS plug": _entry(), "TV": _entry(address="192.XX")}))
                .encode()
                .replace(b"192.XX", b"192.\xff"),
                "invalid UTF-8",
                shed={"NAS plug": NAS},
            ),
            id="invalid-utf8-in-one-entry",
        ),
        pytest.param(
            Damage(b"\xff" + WHOLE, "invalid UTF-8; not JSON: Expecting value at line 1"),
            id="invalid-utf8-before-it-all",
        ),
        pytest.param(
            _damage(_doc(shed=[_entry()]), "shed is a list, not an object", shed={}, told=NOTHING),
            id="shed-a-list",
        ),
        pytest.param(
            _damage(_doc(shed="NAS plug"), "shed is text, not an object", shed={}, told=NOTHING),
            id="shed-text",
        ),
        pytest.param(
            _damage(_doc(shed=3), "shed is a number, not an object", shed={}, told=NOTHING),
            id="shed-a-number",
        ),
        pytest.param(_damage(_doc(pins=["Heater"]), "pins is a list", pins={}), id="pins-a-list"),
        pytest.param(_damage(_doc(pins="Heater"), "pins is text", pins={}), id="pins-text"),
        pytest.param(_damage(_doc(pins=1), "pins is a number", pins={}), id="pins-a-number"),
        pytest.param(
            _damage(_doc(pins={"Heater": "off", "Fridge": "sometimes"}), "pin 'Fridge': unknown"),
            id="pin-unknown",
        ),
        pytest.param(
            _raw(
                _text(_doc(shed={"NAS plug": _entry(), "TV": _entry(at="@at@")}), at="1e400"),
                "entry 'TV': at inf is out of range",
                **one_bad,
            ),
            id="at-1e400-is-inf",
        ),
        pytest.param(
            _raw(
                _text(_doc(shed={"NAS plug": _entry(), "TV": _entry(at="@at@")}), at="NaN"),
                "entry 'TV': at nan is out of range",
                **one_bad,
            ),
            id="at-nan",
        ),
        pytest.param(
            _damage(
                _doc(shed={"NAS plug": _entry(), "TV": _entry(attempts=-1)}),
                "entry 'TV': attempts -1 is out of range",
                **one_bad,
            ),
            id="attempts-negative",
        ),
        pytest.param(
            _damage(
                _doc(shed={"NAS plug": _entry(), "TV": _entry(off_at="soon")}),
                "entry 'TV': off_at is text, not a number",
                **one_bad,
            ),
            id="off-at-text",
        ),
        pytest.param(
            _raw(DEEP, "nested too deeply", shed={}, pins={}, hold=False, told=NOTHING),
            id="nested-too-deeply",
        ),
        pytest.param(
            _raw(
                _text(_doc(shed={"NAS plug": _entry(), "TV": _entry(kind="@k@")}), k=DEEP),
                "nested too deeply",
                told="It recorded NAS plug, TV and perhaps more that could not be read",
                **one_bad,
            ),
            id="nested-too-deeply-in-one-entry",
        ),
        pytest.param(
            Damage(
                WHOLE[: WHOLE.index(b'"192.0.2.21"')],
                "not JSON: Expecting value at line",
                told="It recorded NAS plug, TV and perhaps more that could not be read",
                **one_bad,
            ),
            id="truncated-in-an-entry",
        ),
        pytest.param(
            Damage(
                WHOLE[: WHOLE.index(b'"hold"')],
                "not JSON: Expecting property name",
                shed={},
                pins={},
                hold=False,
                told=NOTHING,
            ),
            id="truncated-at-the-start",
        ),
        pytest.param(
            _raw(
                "",
                "not JSON: Expecting value at line 1",
                shed={},
                pins={},
                hold=False,
                told=NOTHING,
            ),
            id="empty",
        ),
        pytest.param(
            _damage(
                _doc(shed={"NAS plug": _entry(), "TV": _entry(kind="plug")}),
                "entry 'TV': unknown kind 'plug'",
                **one_bad,
            ),
            id="unknown-kind",
        ),
        pytest.param(
            _damage(
                _doc(shed={"NAS plug": _entry(), "TV": _entry(prior="dim")}),
                "entry 'TV': unknown prior 'dim'",
                **one_bad,
            ),
            id="unknown-prior",
        ),
        pytest.param(
            _damage(
                _doc(shed={"NAS plug": _entry(), "TV": "off"}),
                "entry 'TV': is text, not an object",
                **one_bad,
            ),
            id="entry-not-an-object",
        ),
        pytest.param(
            _damage(
                _doc(shed={"NAS plug": _entry(), "TV": {"kind": "kasa", "prior": "on"}}),
                "entry 'TV': address is missing",
                **one_bad,
            ),
            id="entry-missing-a-field",
        ),
        pytest.param(
            _damage({k: v for k, v in _doc().items() if k != "version"}, "version is missing"),
            id="version-missing",
        ),
        pytest.param(_damage(_doc(version="2"), "version '2' is not one"), id="version-text"),
        pytest.param(_damage(_doc(version=1.5), "version 1.5 is not one"), id="version-fraction"),
        pytest.param(_damage(_doc(version=0), "version 0 is not one"), id="version-zero"),
        pytest.param(
            _damage(_doc(hold="yes", paused=True), "hold is text, not true or false", hold=False),
            id="hold-not-a-flag",
        ),
        pytest.param(
            _damage([_doc()], "the document is a list, not an object"),  # read all the same
            id="not-an-object",
        ),
    ]
    return cases


@pytest.mark.parametrize("damage", _cases())
def test_a_damaged_file_is_kept_aside_and_what_can_be_read_is_loaded(
    store: StateStore, damage: Damage
) -> None:
    store.path.write_bytes(damage.data)

    state = store.load()

    assert dict(state.shed) == damage.shed
    assert dict(state.pins) == damage.pins
    assert state.hold is damage.hold
    assert not store.path.exists()
    assert (store.dir / ASIDE).read_bytes() == damage.data
    [problem] = store.problems
    assert "\n" not in problem
    assert problem.startswith(f"{STATE_FILE} could not be read")
    assert damage.reason in problem
    assert f"kept it as {ASIDE}" in problem
    assert damage.told in problem
    if damage.told == NOTHING:
        assert "a manual `loadshed restore` may be needed" in problem


def test_the_next_save_after_a_damaged_file_writes_a_good_one(store: StateStore) -> None:
    store.path.write_text(json.dumps(_doc(shed={"NAS plug": _entry(), "TV": _entry(kind="plug")})))
    state = store.load()
    store.save(state)
    assert store.load() == state
    assert store.problems == []
    assert dict(state.shed) == {"NAS plug": NAS}


def test_the_copy_of_a_damaged_file_never_overwrites_an_earlier_copy(store: StateStore) -> None:
    (store.dir / ASIDE).write_text("earlier")
    (store.dir / f"{ASIDE}-1").write_text("earlier still")
    store.path.write_text("{")
    store.load()
    assert (store.dir / ASIDE).read_text() == "earlier"
    assert (store.dir / f"{ASIDE}-1").read_text() == "earlier still"
    assert (store.dir / f"{ASIDE}-2").read_text() == "{"
    assert f"kept it as {ASIDE}-2" in store.problems[0]


def test_the_problem_line_quotes_the_file_briefly(store: StateStore) -> None:
    long_kind = "plug-" + "x" * 5000
    reason = "a reason the owner's file holds, not for an alert"
    doc = _doc(shed={"NAS plug": _entry(reason=reason), "Line\nbreak": _entry(kind=long_kind)})
    store.path.write_text(json.dumps(doc))
    store.load()
    [problem] = store.problems
    assert "\n" not in problem
    assert reason not in problem
    assert "x" * 100 not in problem
    assert len(problem) < 400
    assert "It recorded Line\\nbreak, NAS plug as switched off" in problem


def test_problems_are_empty_after_a_good_load(store: StateStore) -> None:
    store.path.write_text("{")
    store.load()
    assert store.problems
    store.save(State())
    store.load()
    assert store.problems == []


# --- a file from a newer loadshed -----------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_doc(version=2), id="newer"),
        pytest.param(
            _doc(version=2, shed={"TV": {"kind": "a kind from the future"}}), id="newer-and-unlike"
        ),
    ],
)
def test_a_newer_file_is_refused_and_left_where_it_is(
    store: StateStore, doc: dict[str, Any]
) -> None:
    store.path.write_text(json.dumps(doc))
    before = store.path.read_bytes()
    with pytest.raises(ConfigError) as raised:
        store.load()
    assert "written by a newer loadshed (version 2; this one reads 1)" in str(raised.value)
    assert "upgrade loadshed, or restore by hand and move state.json aside" in str(raised.value)
    assert raised.value.path == store.path
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.dir.iterdir()) == [STATE_FILE]


# --- a state dir deleted while loadshed runs ------------------------------------------------


def test_a_deleted_state_dir_is_made_again_private_and_locked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = StateStore(home / "state")
    store.open()
    try:
        shutil.rmtree(home)
        store.save(State(shed={"NAS plug": NAS}))

        assert _mode(store.dir) == 0o700
        assert _mode(home) == 0o700
        assert store.load() == State(shed={"NAS plug": NAS})
        with pytest.raises(LoadshedError, match="another loadshed is running"):
            StateStore(store.dir).open()
    finally:
        store.close()
    StateStore(store.dir).open()  # the lock was on the new dir, and is released


def test_a_state_dir_replaced_by_another_is_locked_again(tmp_path: Path, umask_022: None) -> None:
    store = StateStore(tmp_path / "state")
    store.open()
    try:
        shutil.rmtree(store.dir)
        store.dir.mkdir()  # 0755: someone put an empty dir back
        store.save(State())
        assert _mode(store.dir) == 0o700
        with pytest.raises(LoadshedError, match="another loadshed is running"):
            StateStore(store.dir).open()
    finally:
        store.close()


def test_events_follow_a_state_dir_made_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.open()
    logger = logging.getLogger("tests.test_state.events")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = store.events_handler()
    logger.addHandler(handler)
    try:
        logger.info("grid down")
        shutil.rmtree(store.dir)
        logger.info("grid back")

        assert (store.dir / EVENTS_FILE).read_text().endswith("grid back\n")
        assert _mode(store.dir) == 0o700
        with pytest.raises(LoadshedError, match="another loadshed is running"):
            StateStore(store.dir).open()
    finally:
        logger.removeHandler(handler)
        handler.close()
        store.close()


def test_events_handler_makes_a_deleted_state_dir_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.open()
    try:
        shutil.rmtree(store.dir)
        store.events_handler().close()
        assert _mode(store.dir) == 0o700
        with pytest.raises(LoadshedError, match="another loadshed is running"):
            StateStore(store.dir).open()
    finally:
        store.close()


# --- a write that fails ---------------------------------------------------------------------


def test_a_failed_save_leaves_the_old_file_whole(store: StateStore) -> None:
    store.save(State(shed={"NAS plug": NAS}))
    before = store.path.read_bytes()
    # A full disk or a read-only mount makes the temporary file's os.open (or its write) fail with
    # OSError. Making the dir read-only would not stop root, so a directory stands where the
    # temporary file must go: os.open fails with IsADirectoryError for any user.
    (store.dir / f"{STATE_FILE}.tmp").mkdir()
    with pytest.raises(IsADirectoryError):
        store.save(State(shed={"NAS plug": NAS, "TV": TV}))
    assert store.path.read_bytes() == before
    assert store.load() == State(shed={"NAS plug": NAS})


def test_a_failed_save_leaves_no_temporary_file(store: StateStore) -> None:
    # The temporary file is written, then the rename fails (as an I/O error or a full disk at
    # fsync would, after the file exists): a directory with something in it stands at state.json.
    (store.path / "something").mkdir(parents=True)
    with pytest.raises(OSError):
        store.save(State(shed={"NAS plug": NAS}))
    assert sorted(p.name for p in store.dir.iterdir()) == [STATE_FILE]


# --- events.log ----------------------------------------------------------------------------


def test_events_log_and_its_rotated_copies_are_private(tmp_path: Path, umask_022: None) -> None:
    store = StateStore(tmp_path / "state")
    store.open()
    (store.dir / EVENTS_FILE).write_text("from an older loadshed\n")  # 0644 under this umask
    logger = logging.getLogger("tests.test_state.rotation")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = store.events_handler()
    handler.maxBytes = 64  # a few lines per file
    logger.addHandler(handler)
    try:
        for n in range(20):
            logger.info("event %d: something happened", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
        store.close()
    files = sorted(p.name for p in store.dir.iterdir() if p.name.startswith(EVENTS_FILE))
    assert files == [EVENTS_FILE, f"{EVENTS_FILE}.1", f"{EVENTS_FILE}.2", f"{EVENTS_FILE}.3"]
    assert {name: _mode(store.dir / name) for name in files} == dict.fromkeys(files, 0o600)

"""Alert texts and the outbox on disk, without any network: pure rendering and file handling."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from loadshed import notify
from loadshed.logs import redact_secrets
from loadshed.model import Event, EventKind
from loadshed.notify import (
    MESSAGES,
    SMS_MAX_CHARS,
    Outbox,
    is_sms_address,
    render_event,
    render_summary,
    short_id,
    url_secrets,
)

T0 = time.mktime((2025, 1, 5, 14, 2, 0, 0, 0, -1))  # 14:02 local time
LONG = "a very long reason that goes on and on about sockets and timeouts " * 3


def hhmm(at: float) -> str:
    return time.strftime("%H:%M", time.localtime(at))


def event(kind: EventKind, n: int, battery_pct: float | None = None, detail: str = "") -> Event:
    return Event(kind, T0 + 60 * n, f"ev{n:04d}", battery_pct, detail)


# --- texts ---------------------------------------------------------------------------------------


def test_shed_sms_reads_like_a_text_message() -> None:
    shed = Event(
        EventKind.SHED_DONE,
        T0,
        "0123456789ab",
        81.4,
        done=("NAS", "PC", "Lamp", "TV", "Fridge 2", "Printer"),
        failed=(("Heater", "no answer"),),
    )
    note = render_event(shed, T0 + 5)
    assert note.sms == (
        f"loadshed: off-grid, shed done {hhmm(T0)}, battery 81%. "
        f"Shed 6 devices, 1 failed (Heater: no answer). #{short_id('0123456789ab')}"
    )
    assert note.title == f"loadshed: Load shed at {hhmm(T0)}"
    assert note.body.splitlines()[:5] == [
        f"Load shed at {hhmm(T0)}. Battery 81%.",
        "Shed 6 devices, 1 failed.",
        "Switched off (6): NAS, PC, Lamp, TV, Fridge 2, Printer",
        "Failed (1):",
        "  - Heater: no answer",
    ]


@pytest.mark.parametrize(
    ("late_s", "said"),
    [
        pytest.param(30, "", id="on-time"),
        pytest.param(37 * 60, " (sent 37 min late)", id="minutes"),
        pytest.param(125 * 60, " (sent 2 h 05 min late)", id="hours"),
        pytest.param(3 * 86400, " (sent 3 days late)", id="days"),
    ],
)
def test_late_message_says_how_late(late_s: float, said: str) -> None:
    lost = Event(EventKind.OFF_GRID, T0, "late-1", 81.0)
    note = render_event(lost, T0 + late_s)
    assert note.sms.startswith(f"loadshed: grid lost {hhmm(T0)}{said}, battery 81%.")
    assert note.body.startswith(f"Grid lost at {hhmm(T0)}{said}. Battery 81%.")


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_has_words_and_fits_one_sms_however_long_the_details(kind: EventKind) -> None:
    assert kind in MESSAGES
    huge = Event(
        kind,
        T0,
        "id-" + kind.name,
        12.0,
        LONG,
        done=tuple(f"Device number {i}" for i in range(40)),
        failed=tuple((f"Plug with a long name {i}", LONG) for i in range(20)),
    )
    note = render_event(huge, T0 + 37 * 60)
    assert len(note.sms) <= SMS_MAX_CHARS
    assert note.sms.startswith("loadshed: ")
    assert note.sms.endswith(f" #{short_id(huge.id)}")
    assert f"{hhmm(T0)} (sent 37 min late)" in note.sms  # cut from the end, never the when
    assert note.sms.isascii()
    assert f"#{short_id(huge.id)}" in note.body


def test_failure_list_shrinks_before_the_text_is_cut() -> None:
    failed = tuple((f"Plug {i}", "no answer in 3 s") for i in range(6))
    note = render_event(Event(EventKind.SHED_DONE, T0, "x", 50.0, failed=failed), T0)
    assert "6 failed (Plug 0, Plug 1, Plug 2, Plug 3, Plug 4, Plug 5)." in note.sms
    assert "no answer" not in note.sms
    assert note.body.count("no answer in 3 s") == 6  # the full body keeps every reason


def test_summary_names_the_earlier_alerts_in_one_sms() -> None:
    events = [event(EventKind.OFF_GRID, 0, battery_pct=81.0)]
    events += [event(EventKind.POWERWALL_LOST, i, detail="no answer") for i in range(1, 11)]
    events.append(event(EventKind.ON_GRID, 68, battery_pct=60.0))
    note = render_summary(events, 0, T0 + 7200)
    assert note.sms.startswith(
        f"loadshed: 12 earlier alerts while offline: grid lost {hhmm(T0)}, "
        f"Powerwall unreachable {hhmm(T0 + 60)}, "
    )
    assert "..." in note.sms and len(note.sms) <= SMS_MAX_CHARS
    assert note.title == "loadshed: 12 earlier alerts while offline"
    lines = note.body.splitlines()
    assert len([line for line in lines if line.startswith("- ")]) == 12
    assert lines[-2].startswith(f"- grid back {hhmm(T0 + 68 * 60)}, battery 60%.")


def test_secrets_are_masked_in_every_text() -> None:
    redact_secrets(["texts-secret-Pa55"])
    leaky = Event(
        EventKind.DEVICE_FAILED, T0, "leak", failed=(("NAS", "ssh: password texts-secret-Pa55"),)
    )
    note = render_event(leaky, T0)
    for text in (note.sms, note.title, note.body):
        assert "texts-secret-Pa55" not in text
    assert "NAS: ssh: password ***" in note.body


@pytest.mark.parametrize(
    ("address", "sms"),
    [
        ("5551234567@vtext.com", True),
        ("5551234567@tmomail.net", True),
        ("+15551234567@example.net", True),  # a phone number at any gateway
        ("Owner@TXT.ATT.NET", True),
        ("owner@example.com", False),
        ("alerts+loadshed@gmail.com", False),
    ],
)
def test_sms_gateway_addresses_are_recognised(address: str, sms: bool) -> None:
    assert is_sms_address(address) is sms


def test_url_secrets_are_what_the_privacy_form_hides() -> None:
    url = "json://user:Tok3nValue@127.0.0.1:8080/path"
    privacy = "json://user:****@127.0.0.1:8080/path?method=POST"
    assert url_secrets(url, privacy) == [url, "Tok3nValue"]


# --- the outbox on disk --------------------------------------------------------------------------


def test_outbox_files_are_private_atomic_and_sorted_in_event_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox", ["smtp"])
    kinds = [EventKind.OFF_GRID, EventKind.SHED_DONE, EventKind.ON_GRID, EventKind.RESTORE_DONE]
    for n, kind in enumerate(kinds):
        assert box.add(event(kind, n))
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == [
        "00000001-off_grid.json",
        "00000002-shed_done.json",
        "00000003-on_grid.json",
        "00000004-restore_done.json",
    ]
    for name in files:
        path = tmp_path / "outbox" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text())["version"] == notify.OUTBOX_VERSION
    again = Outbox(tmp_path / "outbox", ["smtp"])
    assert [letter.items[0].event.kind for letter in again.letters()] == kinds


def test_a_letter_goes_only_when_every_channel_took_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ["smtp", "apprise-1"])
    box.add(event(EventKind.OFF_GRID, 0))
    letter = box.next_for("smtp")
    assert letter is not None
    box.taken("smtp", letter)
    assert box.next_for("smtp") is None and box.next_for("apprise-1") is not None
    assert len(list(tmp_path.glob("0*.json"))) == 1
    box.taken("apprise-1", letter)
    assert len(box) == 0 and not list(tmp_path.glob("0*.json"))
    assert not box.add(event(EventKind.OFF_GRID, 0))  # delivered: never queued again
    assert not Outbox(tmp_path, ["smtp"]).add(event(EventKind.OFF_GRID, 0))  # nor after restart


def test_outbox_collapses_the_oldest_into_one_summary(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ["smtp"])
    for n in range(notify.MAX_WAITING + 5):
        box.add(event(EventKind.POWERWALL_LOST if n % 2 else EventKind.OFF_GRID, n))
    letters = box.letters()
    assert len(letters) == notify.MAX_WAITING
    assert letters[0].is_summary and letters[0].name == "00000001-summary.json"
    assert [e.id for e in letters[0].waiting_for("smtp")] == [f"ev{n:04d}" for n in range(6)]
    assert not letters[1].is_summary
    assert len(list(tmp_path.glob("0*.json"))) == notify.MAX_WAITING
    assert len(Outbox(tmp_path, ["smtp"]).letters()) == notify.MAX_WAITING


def test_a_long_summary_counts_what_it_no_longer_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("loadshed.notify.outbox.MAX_WAITING", 3)
    monkeypatch.setattr("loadshed.notify.outbox.SUMMARY_ITEMS_MAX", 4)
    box = Outbox(tmp_path, ["smtp"])
    for n in range(12):
        box.add(event(EventKind.POWERWALL_LOST, n))
    summary = box.letters()[0]
    assert len(summary.items) == 4 and summary.dropped_for("smtp") == 6
    note = summary.render("smtp", T0 + 3600)
    assert note.sms.startswith("loadshed: 10 earlier alerts while offline: ..., ")
    box.taken("smtp", summary)
    assert len(box) == 2


def test_a_crash_while_folding_leaves_no_duplicate(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ["smtp"])
    for n in range(notify.MAX_WAITING):
        box.add(event(EventKind.OFF_GRID, n))
    first = tmp_path / "00000001-off_grid.json"
    saved = first.read_bytes()
    box.add(event(EventKind.ON_GRID, 99))  # folds 1 and 2 into 00000001-summary.json
    assert not first.exists()
    first.write_bytes(saved)  # as if killed between writing the summary and the unlinks
    again = Outbox(tmp_path, ["smtp"])
    assert len(again) == notify.MAX_WAITING and not first.exists()
    ids = [e.id for letter in again.letters() for e in letter.waiting_for("smtp")]
    assert len(ids) == len(set(ids)) == notify.MAX_WAITING + 1


def test_leftovers_of_a_crash_are_cleaned_and_a_bad_file_set_aside(tmp_path: Path) -> None:
    Outbox(tmp_path, ["smtp"]).add(event(EventKind.OFF_GRID, 0))
    (tmp_path / "00000001-off_grid.json.tmp").write_text("{half a wri")
    (tmp_path / "00000002-on_grid.json").write_text("not json")
    box = Outbox(tmp_path, ["smtp"])
    assert len(box) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000001-off_grid.json",
        "00000002-on_grid.json.bad",
    ]
    assert box.add(event(EventKind.ON_GRID, 1))
    assert (tmp_path / "00000003-on_grid.json").exists()  # numbering goes on past the bad one


def test_a_channel_removed_from_config_no_longer_holds_letters(tmp_path: Path) -> None:
    box = Outbox(tmp_path, ["smtp", "apprise-gone"])
    box.add(event(EventKind.OFF_GRID, 0))
    letter = box.next_for("smtp")
    assert letter is not None
    box.taken("smtp", letter)
    assert len(Outbox(tmp_path, ["smtp"])) == 0
    assert not list(tmp_path.glob("0*.json"))


def test_apprise_header_values_are_secrets_too() -> None:
    url = "json://127.0.0.1:8000/?+X-Api-Key=K3yK3yK3y&+Authorization=Bearer%20T0k&+Accept=json"
    privacy = url  # Apprise's privacy form keeps headers verbatim
    assert url_secrets(url, privacy) == [url, "Bearer T0k", "K3yK3yK3y"]

"""The phone page: the house at a glance in a browser, and the owner's commands behind a token.

Served by the daemon on its own event loop, beside the control socket, when WEB_LISTEN is set:

    GET  /              one self-contained page: inline style and script, nothing from elsewhere
    GET  /api/status    {"snapshot": wire.encode(snapshot), "view": the page's words, ...}
    POST /api/shed      force a shed            } need "Authorization: Bearer <WEB_TOKEN>":
    POST /api/restore   force a restore         } 401 without it or with a wrong one; 403 when
    POST /api/pin       {"device", "pin"}       } no WEB_TOKEN is set (commands are off)

Commands run through `control.run_command`, as the control socket's do; the answer waits for
their outcomes COMMAND_WAIT_S at most, then names the devices still switching (the page sees
the rest in the status). The words on the page (`status_doc`) are a pure function of the
snapshot and the time, made with the screen's own helpers (`view.estimate`, `device_state`).

Security: the token is compared in constant time (`hmac.compare_digest`) and never sent back;
no secret is in the page or the JSON (snapshots hold none). Commands are POST only and carry the
token in a header, never a cookie, so another site's page cannot send one (no CORS is answered,
and a cross-site request with that header needs it). Every response forbids anything from
elsewhere (Content-Security-Policy: the page's own script and style by hash, requests to itself),
sniffing, referrers and framing; nothing is cached. Plain HTTP: for the home network (or a VPN).

Must not: block the engine's loop, echo the token, load or send anything off this host, or stop
shedding when it cannot serve (the monitor logs that and carries on).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from loadshed.config import HostPort, describe_rule
from loadshed.control import PINS, command_of, run_command
from loadshed.engine import Engine, Snapshot
from loadshed.model import Action, Grid, Outcome, Pin, Power, Status, Verb
from loadshed.view import (
    LOW_BATTERY_PCT,
    POWERWALL_2_WH,
    Style,
    device_state,
    duration,
    estimate,
)
from loadshed.wire import WireError, decode, encode

_LOG = logging.getLogger(__name__)

COMMAND_WAIT_S: Final = 15.0  # a command's answer waits this long for outcomes (plugs: ~1 s)
MAX_BODY: Final = 4096  # a pin request is a few dozen bytes
SHUTDOWN_S: Final = 1.0  # on stop, requests in flight get this long
REFUSAL_LOG_S: Final = 60.0  # wrong tokens from one address: one log line per this long
EVENTS_SHOWN: Final = 8  # the latest events lines on the page
STALE_S: Final = 30.0  # a snapshot older than this is said to be old
ORIGIN: Final = "the phone page"  # said in the reason: "forced from the phone page"
PIN_WORDS: Final[dict[Pin | None, str]] = {pin: word for word, pin in PINS.items()}
COMMANDS_OFF: Final = "commands are off: set WEB_TOKEN in config.py (or LOADSHED_WEB_TOKEN)"
WRONG_TOKEN: Final = "wrong or missing token: enter WEB_TOKEN on the page"


# --- the words of the page (pure) ---------------------------------------------------------------


def _hhmm(wall: float) -> str:
    return time.strftime("%H:%M", time.localtime(wall))


def _kw(watts: float) -> str:
    return f"{watts / 1000:.1f} kW"


def _tone(style: Style | None) -> str:
    """A view.Style as the page's tone: ok, warn, bad, dim, shed, pin or ""."""
    return style.value if style is not None else ""


def _grid(snap: Snapshot, now: float) -> dict[str, str]:
    reading = snap.reading
    if not snap.started:
        return {
            "head": "STARTING",
            "detail": "reading the Powerwall and every device",
            "tone": "dim",
        }
    decided = snap.decided_by if snap.decided_by is not None else reading
    by = "" if decided is reading else f" (the {decided.source} says; the Powerwall cannot)"
    if decided.grid is Grid.ON:
        since = f"since {_hhmm(snap.grid_since)}" if snap.grid_since is not None else ""
        return {"head": "ON GRID", "detail": since + by, "tone": "ok"}
    if decided.grid is Grid.OFF:
        began = snap.outage_since if snap.outage_since is not None else snap.grid_since
        since = (
            f"on battery for {duration(now - began)}, since {_hhmm(began)}"
            if began is not None
            else "on battery"
        )
        return {"head": "OFF GRID", "detail": since + by, "tone": "bad"}
    if reading.status is Status.OK:
        what = f"the Powerwall says {reading.raw or 'nothing'}"
    elif reading.status is Status.FAILED:
        what = "the Powerwall refused"
    else:
        what = "the Powerwall is unreachable"
    since = f" since {_hhmm(snap.unknown_since)}" if snap.unknown_since is not None else ""
    detail = f" ({reading.detail})" if reading.detail else ""
    return {
        "head": "GRID UNKNOWN",
        "detail": f"{what}{since}{detail}: nothing is shed or restored until it is known",
        "tone": "warn",
    }


def _battery(snap: Snapshot) -> dict[str, Any]:
    reading = snap.reading
    power = [f"load {_kw(reading.load_w)}"] if reading.load_w is not None else []
    if reading.solar_w is not None:
        power.append(f"solar {_kw(reading.solar_w)}")
    pct = reading.battery_pct
    if pct is None:
        return {"pct": None, "words": "unknown", "tone": "warn", "power": " · ".join(power)}
    tone = "bad" if pct < LOW_BATTERY_PCT else "ok"
    return {
        "pct": round(min(max(pct, 0.0), 100.0), 1),
        "words": f"{pct:.0f} %",
        "tone": tone,
        "power": " · ".join(power),
    }


def _time_left(snap: Snapshot, capacity_wh: float | None) -> dict[str, str]:
    off_grid = snap.reading.grid is Grid.OFF
    label = "time left" if off_grid else "on battery"
    guess = estimate(snap, capacity_wh if capacity_wh is not None else POWERWALL_2_WH)
    if guess is None:
        words = "no battery or load reading"
        return {"label": label, "head": "unknown", "words": words, "tone": "dim"}
    if guess.hours is None:
        words = "solar covers the load"
        return {"label": label, "head": "as long as the sun lasts", "words": words, "tone": ""}
    head = f"≈ {duration(guess.hours * 3600)}"
    words = f"at {_kw(guess.drain_w)}"
    if guess.shed_hours is not None:
        near = "≥" if guess.unmetered else "≈"
        words += f"; {near} {duration(guess.shed_hours * 3600)} with all sheddable off"
    elif guess.sheddable:
        words += "; with all sheddable off, solar covers the load"
    elif any(r.shed_reason is not None for r in snap.devices):
        words += "; every sheddable device is off"
    if capacity_wh is None:
        words += f" ({POWERWALL_2_WH / 1000:g} kWh assumed)"
    return {"label": label, "head": head, "words": words, "tone": "warn" if off_grid else ""}


def _status(snap: Snapshot, now: float) -> list[dict[str, str]]:
    """What loadshed is doing and waiting for, as the screen's status line says it."""
    items: list[dict[str, str]] = []

    def say(words: str, tone: str) -> None:
        items.append({"words": words, "tone": tone})

    if snap.shed_at is not None:
        say(f"shedding in {duration(max(snap.shed_at - now, 0.0))}", "warn")
    if snap.restore_at is not None:
        say(f"restoring in {duration(max(snap.restore_at - now, 0.0))}", "warn")
    if snap.hold:
        say("held off by a forced shed until Restore", "warn")
    if snap.paused:
        say("shedding paused by a forced restore until the grid is back", "warn")
    idle = [r for r in snap.devices if r.busy is None and r.shed_reason is not None]
    off = sum(snap.dry_run or r.power is not Power.ON for r in idle)
    busy = sum(r.busy is not None for r in snap.devices)
    if off:
        say(f"{off} {'would be switched' if snap.dry_run else 'switched'} off by loadshed", "shed")
    if busy:
        say(f"{busy} switching", "warn")
    if len(idle) > off:
        say(f"{len(idle) - off} still on: switching off failed", "bad")
    if snap.started and not items:
        say("nothing shed", "dim")
    return items


def _sources(snap: Snapshot) -> list[dict[str, str]]:
    rows = []
    for row in snap.sources:
        reading = row.reading
        why = reading.raw if reading.grid is not Grid.UNKNOWN else reading.detail
        rows.append(
            {
                "name": row.name,
                "words": {Grid.ON: "on grid", Grid.OFF: "off grid"}.get(
                    reading.grid, "cannot tell"
                ),
                "tone": {Grid.ON: "ok", Grid.OFF: "bad"}.get(reading.grid, "warn"),
                "why": why,
                "age": "not read yet" if row.age_s is None else f"{duration(row.age_s)} ago",
            }
        )
    return rows


def _devices(snap: Snapshot) -> list[dict[str, Any]]:
    rows = []
    for row in snap.devices:
        state, style = device_state(row)
        rule = describe_rule(row.rule)
        if row.pin is not None:
            rule = f"pinned: {row.pin.value} ({rule} when auto)"
        rows.append(
            {
                "name": row.name,
                "kind": row.kind.value,
                "state": state,
                "tone": _tone(style),
                "rule": rule,
                "pin": PIN_WORDS[row.pin],
                "shed": f"SHED: {row.shed_reason}" if row.shed_reason is not None else "",
                "note": row.note,
            }
        )
    return rows


def status_doc(
    snap: Snapshot, now: float, *, commands: bool, capacity_wh: float | None = None
) -> dict[str, Any]:
    """The JSON of GET /api/status: the snapshot as the control socket sends it, and the page's
    words for it at `now` (wall clock). `commands`: whether a token is set (never the token)."""
    problems = list(snap.problems)
    if snap.disagreement:
        problems.append(f"grid sources disagree: {snap.disagreement}")
    age_s = now - snap.taken_at
    if snap.started and age_s > STALE_S:
        problems.append(f"loadshed's last look at the house was {duration(age_s)} ago")
    return {
        "snapshot": encode(snap),
        "now": now,
        "commands": commands,
        "view": {
            "grid": _grid(snap, now),
            "dry_run": snap.dry_run,
            "battery": _battery(snap),
            "time_left": _time_left(snap, capacity_wh),
            "status": _status(snap, now),
            "sources": _sources(snap),
            "problems": problems,
            "devices": _devices(snap),
            "events": list(snap.events[-EVENTS_SHOWN:]),
            "taken": time.strftime("%H:%M:%S", time.localtime(snap.taken_at)),
        },
    }


def command_doc(label: str, messages: list[dict[str, Any]], *, counted: bool) -> dict[str, Any]:
    """The answer to a command: a summary (with how many devices it switches, when `counted`),
    a line per device, and whether all went well."""
    lines, ok, asked = [], True, 0
    for message in messages:
        if message["type"] == "accepted":
            asked = len(message["actions"])
        elif message["type"] == "outcome":
            try:
                action = decode(Action, message["action"])
                outcome = decode(Outcome, message["outcome"])
            except WireError:  # ours, just encoded: cannot happen
                continue
            wanted = Power.OFF if action.verb is Verb.SHED else Power.ON
            if outcome.is_ok and outcome.power is wanted:
                lines.append(f"{action.device}: {wanted.value}")
            else:
                ok = False
                lines.append(f"{action.device}: FAILED: {outcome.detail or outcome.status.value}")
        elif message["type"] == "done":
            for name in message["waiting"]:
                ok = False
                lines.append(f"{name}: still switching (the list above follows it)")
    if not asked:
        summary = f"{label}: nothing to switch" if counted else f"{label} (nothing to switch)"
    else:
        summary = f"{label}: {asked} device{'s' if asked != 1 else ''}" if counted else label
        summary += "" if ok else ", not all done"
    return {"ok": ok, "summary": summary, "lines": lines}


# --- the server (in the daemon, on the engine's loop) --------------------------------------------


class WebServer:
    """Serves the phone page and its API for one engine, on one address."""

    def __init__(self, engine: Engine, listen: HostPort, token: str) -> None:
        self.engine = engine
        self.listen = listen
        self._token = token.encode()
        self._runner: web.AppRunner | None = None
        self._refused_at: dict[str, float] = {}  # address: when a wrong token was last logged
        self._refused_since: dict[str, int] = {}  # address: wrong tokens not logged since

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/status", self._status)
        app.router.add_post("/api/shed", self._shed)
        app.router.add_post("/api/restore", self._restore)
        app.router.add_post("/api/pin", self._pin)
        app.on_response_prepare.append(_secure)
        return app

    async def start(self) -> None:
        """Listen on the address; OSError when it cannot (the caller logs it and carries on)."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        try:
            port = self.listen.port if self.listen.port is not None else 0
            await web.TCPSite(runner, self.listen.host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        commands = "commands need WEB_TOKEN" if self._token else "read-only: no WEB_TOKEN set"
        _LOG.info("phone page: http://%s/ (%s)", self.listen, commands)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the handlers -----------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        doc = status_doc(self.engine.snapshot, time.time(), commands=bool(self._token))
        return _json(doc)

    async def _shed(self, request: web.Request) -> web.StreamResponse:
        return await self._command(request, "shed", "Shed")

    async def _restore(self, request: web.Request) -> web.StreamResponse:
        return await self._command(request, "restore", "Restore")

    async def _pin(self, request: web.Request) -> web.StreamResponse:
        return await self._command(request, "pin", "Pin")

    async def _command(self, request: web.Request, op: str, label: str) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        device: object = None
        pin: object = None
        if op == "pin":
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return _error(400, 'send JSON: {"device": "TV", "pin": "on", "off" or "auto"}')
            if not isinstance(body, dict):
                return _error(400, 'send a JSON object: {"device": ..., "pin": ...}')
            device, pin = body.get("device"), body.get("pin")
            if isinstance(device, str) and device not in self.engine.registry.devices:
                return _error(400, f"no device called {device!r}")
            label = f"{device}: keep {pin}" if pin in ("on", "off") else f"{device}: automatic"
        try:
            command = command_of(op, device, pin, origin=ORIGIN)
        except ValueError as err:
            return _error(400, str(err))
        _LOG.info("phone page (%s): %s", request.remote, label)
        messages: list[dict[str, Any]] = []

        async def report(doc: dict[str, Any]) -> None:
            messages.append(doc)

        await run_command(self.engine, command, report, COMMAND_WAIT_S)
        return _json(command_doc(label, messages, counted=op != "pin"))

    def _refusal(self, request: web.Request) -> web.StreamResponse | None:
        """None when the request carries the token; otherwise the answer refusing it."""
        if not self._token:
            return _error(403, COMMANDS_OFF)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Compared in constant time, whatever was sent: the time taken tells nothing of the token.
        matches = hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)
        if scheme.lower() == "bearer" and matches:
            return None
        self._log_refusal(request.remote or "?")
        response = _error(401, WRONG_TOKEN)
        response.headers["WWW-Authenticate"] = 'Bearer realm="loadshed"'
        return response

    def _log_refusal(self, address: str) -> None:
        now = time.monotonic()
        self._refused_since[address] = self._refused_since.get(address, 0) + 1
        if now - self._refused_at.get(address, -REFUSAL_LOG_S) < REFUSAL_LOG_S:
            return
        count = self._refused_since.pop(address)
        # Forget addresses quiet for a while: many senders cannot grow these without bound.
        self._refused_at = {a: t for a, t in self._refused_at.items() if now - t < REFUSAL_LOG_S}
        self._refused_since = {
            a: n for a, n in self._refused_since.items() if a in self._refused_at
        }
        self._refused_at[address] = now
        _LOG.warning(
            "phone page: refused %d command%s from %s without the right token",
            count,
            "s" if count != 1 else "",
            address,
        )


def _json(doc: Mapping[str, Any], status: int = 200) -> web.Response:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=body, status=status, content_type="application/json")


def _error(status: int, error: str) -> web.Response:
    return _json({"ok": False, "error": error}, status)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, errors included: nothing from elsewhere, no sniffing, referrer or framing,
    and never cached (the page is small; a stale one after an upgrade helps nobody)."""
    response.headers.update(SECURITY_HEADERS)


# --- the page ------------------------------------------------------------------------------------

_STYLE: Final = """
:root { color-scheme: dark; --bg: #000; --fg: #e8e8e8; --dim: #8c8c8c; --card: #121212;
  --line: #2c2c2c; --ok: #4ade80; --bad: #ff6b6b; --warn: #fbbf24; --shed: #e879f9;
  --pin: #67e8f9; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0 auto; max-width: 40rem; padding: 10px 12px 48px; background: var(--bg);
  color: var(--fg); font: 18px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; justify-content: space-between; align-items: baseline; color: var(--dim);
  font-size: 15px; }
h1 { margin: 0; font-size: 16px; font-weight: 600; }
h2 { margin: 22px 0 8px; font-size: 15px; font-weight: 600; color: var(--dim);
  text-transform: uppercase; letter-spacing: .06em; }
[hidden] { display: none !important; }
[data-tone=ok] { color: var(--ok); } [data-tone=bad] { color: var(--bad); }
[data-tone=warn] { color: var(--warn); } [data-tone=dim] { color: var(--dim); }
[data-tone=shed] { color: var(--shed); } [data-tone=pin] { color: var(--pin); }
.note { margin: 8px 0; padding: 10px 12px; border-radius: 10px; background: #2a1d00;
  color: var(--warn); font-weight: 600; }
#stale { background: #3a0d0d; color: var(--bad); }
#banner { margin: 8px 0 12px; padding: 12px 14px; border-radius: 14px; background: var(--card);
  border-left: 10px solid var(--dim); }
body[data-grid=ok] #banner { border-color: var(--ok); }
body[data-grid=bad] #banner { border-color: var(--bad); background: #2b0b0b; }
body[data-grid=warn] #banner { border-color: var(--warn); background: #2a1d00; }
#grid { font-size: 36px; font-weight: 800; letter-spacing: .02em; line-height: 1.15; }
body[data-grid=ok] #grid { color: var(--ok); } body[data-grid=bad] #grid { color: var(--bad); }
body[data-grid=warn] #grid { color: var(--warn); }
#grid-detail { margin-top: 4px; }
.big { font-size: 28px; font-weight: 700; }
.bar { height: 14px; margin: 6px 0 4px; border-radius: 7px; background: #262626; overflow: hidden; }
#fill { height: 100%; width: 0; background: var(--ok); }
#fill[data-tone=bad] { background: var(--bad); } #fill[data-tone=warn] { background: var(--warn); }
.row { display: flex; justify-content: space-between; gap: 12px; flex-wrap: wrap;
  align-items: baseline; }
.label { color: var(--dim); }
ul { list-style: none; margin: 0; padding: 0; }
#status li, #sources li, #problems li { margin: 4px 0; }
#problems li { color: var(--bad); font-weight: 600; }
.actions { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; margin-top: 12px; }
button { font: inherit; color: var(--fg); background: #1f1f1f; border: 2px solid var(--line);
  border-radius: 12px; min-height: 48px; padding: 8px 10px; cursor: pointer; }
button:disabled { opacity: .4; cursor: default; }
button:focus-visible { outline: 3px solid var(--pin); outline-offset: 2px; }
.actions button { min-height: 60px; font-size: 20px; font-weight: 700; }
#shed { border-color: #7a2f86; } #restore { border-color: #2f6b45; }
button[data-armed] { background: #4a1d1d; border-color: var(--bad); color: #fff; }
#result { margin-top: 10px; padding: 10px 12px; border-radius: 10px; background: var(--card);
  border-left: 6px solid var(--line); }
#result[data-tone=ok] { border-color: var(--ok); }
#result[data-tone=bad] { border-color: var(--bad); }
#result .head { font-weight: 700; }
#devices li { margin: 8px 0; padding: 10px 12px; border-radius: 12px; background: var(--card);
  border-left: 6px solid var(--line); }
#devices li[data-shed=yes] { border-color: var(--shed); }
.name { font-weight: 700; font-size: 20px; }
.state { font-weight: 600; text-align: right; }
.rule { color: var(--dim); font-size: 16px; }
.why { font-weight: 600; }
details { margin-top: 4px; }
summary { display: inline-block; padding: 6px 0; color: var(--pin); font-size: 16px;
  cursor: pointer; list-style: none; }
summary::-webkit-details-marker { display: none; }
summary::after { content: " ▸"; } details[open] summary::after { content: " ▾"; }
.pins { display: grid; grid-template-columns: repeat(3, 1fr); gap: 6px; margin-top: 4px; }
.pins button { min-height: 44px; font-size: 16px; }
.pins button[aria-pressed=true] { border-color: var(--pin); color: var(--pin); font-weight: 700; }
#events li { color: var(--dim); font-size: 15px; margin: 3px 0; }
input { font: inherit; width: 100%; min-height: 48px; padding: 8px 10px; color: var(--fg);
  background: #0c0c0c; border: 2px solid var(--line); border-radius: 12px; }
.token { display: grid; grid-template-columns: 1fr auto; gap: 8px; }
footer { margin-top: 24px; color: var(--dim); font-size: 14px; }
"""

_SCRIPT: Final = """
"use strict";
(() => {
  const KEY = "loadshed-token";
  const POLL_MS = 2000;
  const ARM_MS = 4000;
  const $ = (id) => document.getElementById(id);
  const cards = new Map();
  let token = "";
  try { token = localStorage.getItem(KEY) || ""; } catch (e) { token = ""; }
  let commandsOn = false;
  let lastOk = 0;
  let timer = 0;
  let armed = null;
  let armTimer = 0;

  function make(tag, cls, text, tone) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    if (tone) node.dataset.tone = tone;
    return node;
  }
  function put(node, text, tone) {
    if (node.textContent !== text) node.textContent = text;
    if (tone === undefined) return;
    if (tone) node.dataset.tone = tone; else delete node.dataset.tone;
  }
  function list(id, items, render) {
    const node = $(id);
    node.replaceChildren(...items.map(render));
    node.hidden = items.length === 0;
  }

  function card(name) {
    const root = make("li");
    root.dataset.device = name;
    const top = make("div", "row");
    const title = make("span", "name", name);
    const state = make("span", "state");
    top.append(title, state);
    const rule = make("div", "rule");
    const why = make("div", "why");
    const more = make("details");
    const summary = make("summary", "", "Pin");
    const pins = make("div", "pins");
    more.append(summary, pins);
    const choices = [["on", "Keep on"], ["off", "Keep off"], ["auto", "Auto"]];
    const buttons = choices.map(([pin, words]) => {
      const b = make("button", "", words);
      b.type = "button";
      b.dataset.pin = pin;
      b.setAttribute("aria-label", name + ": " + words);
      b.addEventListener("click", () => {
        const say = pin === "auto" ? name + ": automatic" : name + ": keep " + pin;
        send("/api/pin", {device: name, pin: pin}, say);
      });
      pins.append(b);
      return b;
    });
    root.append(top, rule, why, more);
    return {root, state, rule, why, summary, buttons};
  }

  function devices(rows) {
    const box = $("devices");
    const seen = new Set();
    rows.forEach((d, i) => {
      let c = cards.get(d.name);
      if (!c) { c = card(d.name); cards.set(d.name, c); }
      seen.add(d.name);
      c.root.dataset.shed = d.shed ? "yes" : "no";
      put(c.state, d.state, d.tone);
      put(c.rule, d.kind + " · " + d.rule);
      put(c.why, d.shed || d.note, d.shed ? "shed" : (d.note ? "warn" : ""));
      c.why.hidden = !(d.shed || d.note);
      put(c.summary, d.pin === "auto" ? "Pin" : "Pinned: keep " + d.pin);
      for (const b of c.buttons) {
        b.setAttribute("aria-pressed", String(b.dataset.pin === d.pin));
        b.disabled = !commandsOn;
      }
      if (box.children[i] !== c.root) box.insertBefore(c.root, box.children[i] || null);
    });
    for (const [name, c] of cards) {
      if (!seen.has(name)) { c.root.remove(); cards.delete(name); }
    }
  }

  function show(doc) {
    const v = doc.view;
    commandsOn = doc.commands;
    document.body.dataset.grid = v.grid.tone;
    put($("grid"), v.grid.head);
    put($("grid-detail"), v.grid.detail);
    $("dry").hidden = !v.dry_run;
    put($("battery"), v.battery.words, v.battery.tone);
    $("fill").style.width = (v.battery.pct === null ? 0 : v.battery.pct) + "%";
    $("fill").dataset.tone = v.battery.tone;
    put($("power"), v.battery.power);
    put($("left-label"), v.time_left.label);
    put($("left"), v.time_left.head, v.time_left.tone || "");
    put($("left-detail"), v.time_left.words);
    list("status", v.status, (s) => make("li", "", s.words, s.tone));
    list("sources", v.sources, (s) => {
      const li = make("li");
      li.append(make("span", "label", s.name + " "), make("span", "", s.words, s.tone),
        make("span", "label", (s.why ? " (" + s.why + ")" : "") + " · " + s.age));
      return li;
    });
    list("problems", v.problems, (p) => make("li", "", "! " + p));
    devices(v.devices);
    list("events", v.events.slice().reverse(), (e) => make("li", "", e));
    put($("taken"), "house as of " + v.taken);
    controls();
  }

  function controls() {
    $("shed").disabled = !commandsOn;
    $("restore").disabled = !commandsOn;
    $("commands-off").hidden = commandsOn;
    $("token-box").hidden = !commandsOn;
    $("token-new").hidden = Boolean(token);
    $("token-saved").hidden = !token;
  }

  async function refresh() {
    try {
      const r = await fetch("/api/status", {cache: "no-store"});
      if (!r.ok) throw new Error("HTTP " + r.status);
      show(await r.json());
      lastOk = Date.now();
      $("stale").hidden = true;
      document.body.dataset.live = "yes";
    } catch (e) {
      const since = lastOk ? " since " + new Date(lastOk).toLocaleTimeString() : "";
      put($("stale"), "Cannot reach loadshed" + since + ": what you see may be old.");
      $("stale").hidden = false;
      document.body.dataset.live = "no";
    }
  }

  async function loop() {
    clearTimeout(timer);
    if (!document.hidden) await refresh();
    timer = setTimeout(loop, POLL_MS);
  }

  async function send(path, body, label) {
    const out = $("result");
    out.hidden = false;
    delete out.dataset.tone;
    delete out.dataset.ms;
    out.replaceChildren(make("div", "head", label + ": sending…"));
    const headers = {"Content-Type": "application/json"};
    if (token) headers.Authorization = "Bearer " + token;
    const started = performance.now();
    let doc = {};
    try {
      const r = await fetch(path, {method: "POST", headers, body: JSON.stringify(body),
        cache: "no-store", credentials: "omit"});
      doc = await r.json().catch(() => ({ok: false, error: "HTTP " + r.status}));
    } catch (e) {
      doc = {ok: false, error: "cannot reach loadshed (" + e.message + ")"};
    }
    const head = doc.error ? label + ": refused: " + doc.error : doc.summary;
    out.dataset.tone = doc.ok ? "ok" : "bad";
    out.dataset.ms = String(Math.round(performance.now() - started));
    const lines = (doc.lines || []).map((line) => make("div", "", line));
    out.replaceChildren(make("div", "head", head), ...lines);
    loop();
  }

  function disarm() {
    if (armed) { armed.textContent = armed.dataset.label; delete armed.dataset.armed; }
    armed = null;
    clearTimeout(armTimer);
  }
  const forced = [["shed", "/api/shed", "Shed"], ["restore", "/api/restore", "Restore"]];
  for (const [id, path, label] of forced) {
    const b = $(id);
    b.dataset.label = b.textContent;
    b.addEventListener("click", () => {
      if (armed === b) { disarm(); send(path, {}, label); return; }
      disarm();
      armed = b;
      b.dataset.armed = "yes";
      b.textContent = b.dataset.confirm;
      armTimer = setTimeout(disarm, ARM_MS);
    });
  }

  $("save-token").addEventListener("click", () => {
    const value = $("token").value.trim();
    if (!value) return;
    token = value;
    try { localStorage.setItem(KEY, value); } catch (e) { /* private mode: kept until reload */ }
    $("token").value = "";
    controls();
  });
  $("token").addEventListener("keydown", (e) => {
    if (e.key === "Enter") $("save-token").click();
  });
  $("forget-token").addEventListener("click", () => {
    token = "";
    try { localStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
    controls();
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) loop(); });
  controls();
  loop();
})();
"""

_BODY: Final = """
<header><h1>loadshed</h1><span id="taken"></span></header>
<div id="stale" class="note" role="alert" hidden></div>
<div id="dry" class="note" hidden>DRY RUN: nothing is switched</div>
<section id="banner" aria-live="polite">
  <div id="grid">…</div>
  <div id="grid-detail">waiting for the daemon</div>
</section>
<div class="row"><span class="label">battery</span><span id="battery" class="big"></span></div>
<div class="bar"><div id="fill"></div></div>
<div id="power" class="label"></div>
<div class="row"><span id="left-label" class="label">time left</span>
  <span id="left" class="big"></span></div>
<div id="left-detail" class="label"></div>
<ul id="sources" hidden></ul>
<ul id="problems" hidden></ul>
<ul id="status"></ul>
<div class="actions">
  <button id="shed" type="button" data-confirm="Tap again to shed" disabled>Shed now</button>
  <button id="restore" type="button" data-confirm="Tap again to restore" disabled>Restore</button>
</div>
<div id="result" aria-live="polite" hidden></div>
<h2>Devices</h2>
<ul id="devices"></ul>
<h2>Latest</h2>
<ul id="events" hidden></ul>
<h2>This phone</h2>
<div id="commands-off" class="note" hidden>Commands are off: set WEB_TOKEN in config.py to shed,
restore and pin from here. The page is read-only.</div>
<div id="token-box" hidden>
  <div id="token-new">
    <p>Enter WEB_TOKEN once to shed, restore and pin from this phone. It stays in this browser.</p>
    <div class="token">
      <input id="token" type="password" autocomplete="off" autocapitalize="off" spellcheck="false"
        aria-label="WEB_TOKEN">
      <button id="save-token" type="button">Save</button>
    </div>
  </div>
  <div id="token-saved" class="row"><span>This phone can send commands.</span>
    <button id="forget-token" type="button">Forget token</button></div>
</div>
<footer>Updates every 2 s. Shed and Restore ask for a second tap.</footer>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE: Final = (
    "<!doctype html>\n"
    '<html lang="en"><head><meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<meta name="color-scheme" content="dark"><meta name="theme-color" content="#000000">\n'
    '<meta name="referrer" content="no-referrer">\n'
    '<link rel="icon" href="data:,">\n'
    "<title>loadshed</title>\n"
    f"<style>{_STYLE}</style>\n"
    f"</head><body>{_BODY}<script>{_SCRIPT}</script>\n"
    "</body></html>\n"
).encode()

# Only the page's own script and style (by hash), requests to itself, and nothing else.
CSP: Final = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_sha256(_SCRIPT)}",
        f"style-src {_sha256(_STYLE)}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}

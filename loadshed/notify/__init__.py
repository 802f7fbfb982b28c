"""Alerts that arrive: the message texts, the persisted outbox, and the SMTP and Apprise senders.

What lives where, each module importing only those above it:

- `texts`: what each event says, the SMS-sized text and the full message (`render_event`). Pure.
- `outbox`: `<state dir>/outbox/`, the messages waiting on disk until every channel has them.
- `channels`: the ways to reach the owner, SMTP email and Apprise URLs, and `SendError`.
- `notifier`: the `Notifier` the monitor submits events to, and its sender loop.

What this package must not do: send anything from `submit` (the monitor's loop never waits on the
network), raise into the monitor, let a send run unbounded (every send runs on its own daemon
thread under an outer deadline: Apprise has no overall timeout and smtplib's is per socket call),
put a secret in a message, a log line or a file name, or write anything outside `outbox/`.

The names below are re-exported for `from loadshed.notify import ...`. A constant is read where it
is defined: to change one in a test, patch that module (`loadshed.notify.outbox.MAX_WAITING`).
"""

from __future__ import annotations

from loadshed.notify.channels import (
    SMTP_LOGIN_REJECTED,
    AppriseChannel,
    Channel,
    SendError,
    SmtpChannel,
    is_sms_address,
    url_secrets,
)
from loadshed.notify.notifier import Notifier
from loadshed.notify.outbox import MAX_WAITING, OUTBOX_VERSION, Item, Letter, Outbox, waiting
from loadshed.notify.texts import (
    MESSAGES,
    SMS_MAX_CHARS,
    Note,
    Wording,
    render_event,
    render_summary,
    render_test,
    short_id,
)

__all__ = [
    "MAX_WAITING",
    "MESSAGES",
    "OUTBOX_VERSION",
    "SMS_MAX_CHARS",
    "SMTP_LOGIN_REJECTED",
    "AppriseChannel",
    "Channel",
    "Item",
    "Letter",
    "Note",
    "Notifier",
    "Outbox",
    "SendError",
    "SmtpChannel",
    "Wording",
    "is_sms_address",
    "render_event",
    "render_summary",
    "render_test",
    "short_id",
    "url_secrets",
    "waiting",
]

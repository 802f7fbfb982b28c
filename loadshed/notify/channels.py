"""Channels: the ways to reach the owner, SMTP email (smtplib) and Apprise URLs.

Each `send` blocks and raises SendError with a reason the owner can read, secrets removed;
the notifier runs it on its own thread under an outer deadline.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Final, Protocol
from urllib.parse import unquote

import apprise

from loadshed.config import Config
from loadshed.logs import redact, redact_secrets
from loadshed.notify.texts import Note

# --- policy numbers ------------------------------------------------------------------------------

SMTP_TIMEOUT_S: Final = 15.0  # each SMTP connect and reply; a working relay answers in seconds
APPRISE_CALL_S: Final = 30.0  # Apprise's own limit on one notify() (each request has 4 s + 4 s)

_CREDENTIAL_HEADER_RE: Final = re.compile(
    r"(?i)key|token|auth|secret|pass|sign|cookie|session|credential"
)
_MIN_SECRET_LEN: Final = 3  # as loadshed.logs: shorter pieces would mask ordinary words

SMTP_IMPLICIT_TLS_PORT: Final = 465  # SMTPS: TLS from the first byte (RFC 8314)
SMTP_KEY: Final = "smtp"
SMTP_LOGIN_REJECTED: Final = "SMTP login rejected: check SMTP_USER/SMTP_PASSWORD"

# Carrier email-to-SMS gateways (FIELD.md "Alerts"; several have closed, some silently). An
# address at one of these, or whose local part is a phone number, gets the short SMS text.
SMS_GATEWAY_DOMAINS: Final = frozenset(
    {
        "tmomail.net",
        "txt.att.net",
        "mms.att.net",
        "vtext.com",
        "vzwpix.com",
        "messaging.sprintpcs.com",
        "pm.sprint.com",
        "msg.fi.google.com",
        "mymetropcs.com",
        "sms.myboostmobile.com",
        "myboostmobile.com",
        "sms.cricketwireless.net",
        "mms.cricketwireless.net",
        "email.uscc.net",
        "mms.uscc.net",
        "vmobl.com",
        "text.republicwireless.com",
        "txt.bell.ca",
        "msg.telus.com",
        "pcs.rogers.com",
        "txt.freedommobile.ca",
    }
)
_PHONE_RE: Final = re.compile(r"^\+?\d{7,15}$")


# --- channels ------------------------------------------------------------------------------------


class SendError(Exception):
    """A send that did not go through; str() is one line for the owner, secrets removed."""


class Channel(Protocol):
    """One way to reach the owner. `send` blocks (it runs on its own thread) and raises
    SendError with a readable reason; it is bounded by its library's timeouts and, outside,
    by SEND_DEADLINE_S."""

    @property
    def key(self) -> str:
        """Stable and secret-free: recorded in outbox files as "taken by"."""
        ...

    @property
    def name(self) -> str:
        """What the owner sees: an address or a privacy URL, never a password or token."""
        ...

    def send(self, note: Note) -> None: ...


def is_sms_address(address: str) -> bool:
    """Whether an address looks like an email-to-SMS gateway (it then gets the short text)."""
    local, _, domain = address.strip().lower().rpartition("@")
    return domain in SMS_GATEWAY_DOMAINS or bool(_PHONE_RE.match(local))


def _ehlo_name() -> str:
    # smtplib would call socket.getfqdn(), a DNS lookup that hangs when the network is down.
    name = socket.gethostname()
    return name if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name) else "localhost"


@dataclass(frozen=True, slots=True)
class SmtpChannel:
    """Email to MAILNOTIF through an SMTP relay, with smtplib on a worker thread.

    smtplib (standard library) rather than aiosmtplib: the send runs on its own thread under an
    outer deadline anyway, and it is one dependency fewer. Port 465 is implicit TLS (SMTP_SSL);
    otherwise STARTTLS when SMTP_STARTTLS, with the system's certificate checks. MAILNOTIF at an
    SMS gateway (or a phone number) gets the SMS text alone, without a subject, since carriers
    put the subject in the text too; any other address gets the title as the subject and the
    full body. The sender is MAIL_FROM, else SMTP_USER when it is an address, else MAILNOTIF.
    """

    host: str
    port: int
    mail_from: str
    mail_to: str
    user: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = True
    ssl: bool = False  # SMTP_SSL: implicit TLS on a port other than 465
    timeout_s: float = SMTP_TIMEOUT_S

    @classmethod
    def from_config(cls, config: Config) -> SmtpChannel:
        sender = config.mail_from or (config.smtp_user if "@" in config.smtp_user else "")
        return cls(
            host=config.smtp_host,
            port=config.smtp_port,
            mail_from=sender or config.mail_to,
            mail_to=config.mail_to,
            user=config.smtp_user,
            password=config.smtp_password,
            starttls=config.smtp_starttls,
            ssl=config.smtp_ssl,
        )

    @property
    def key(self) -> str:
        return SMTP_KEY

    @property
    def name(self) -> str:
        return f"{self.mail_to} via {self.host}:{self.port}"

    @property
    def is_sms(self) -> bool:
        return is_sms_address(self.mail_to)

    @property
    def implicit_tls(self) -> bool:
        return self.ssl or self.port == SMTP_IMPLICIT_TLS_PORT

    @property
    def cleartext_allowed(self) -> bool:
        """A login without TLS only to a relay on this very machine, asked for in so many
        words: SMTP_HOST a loopback address (not a name) and SMTP_STARTTLS = False."""
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
        return loopback and not self.starttls

    def compose(self, note: Note) -> EmailMessage:
        """Build the email for a note."""
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = self.mail_to
        msg["Date"] = email.utils.formatdate(localtime=True)
        domain = self.mail_from.rpartition("@")[2] or "loadshed.invalid"
        msg["Message-ID"] = email.utils.make_msgid("loadshed", domain=domain)
        msg["X-Loadshed-Event"] = note.ref
        if self.is_sms:
            msg.set_content(note.sms)
        else:
            msg["Subject"] = note.title
            msg.set_content(note.body)
        return msg

    def send(self, note: Note) -> None:
        self._run(self.compose(note))

    def probe(self) -> None:
        """Everything a send does but the send: connect, TLS, log in, quit. SendError says why
        it would fail (`loadshed check`)."""
        self._run(None)

    def _run(self, msg: EmailMessage | None) -> None:
        try:
            self._deliver(msg)
        except SendError:
            raise
        except smtplib.SMTPAuthenticationError as err:
            raise SendError(SMTP_LOGIN_REJECTED) from err
        except UnicodeEncodeError as err:  # smtplib logs in with ASCII only
            raise SendError(
                "SMTP_USER or SMTP_PASSWORD has characters outside ASCII, which an SMTP login "
                "cannot carry: use an app password"
            ) from err
        except smtplib.SMTPRecipientsRefused as err:
            code, said = next(iter(err.recipients.values()), (0, b""))
            why = f"the server refused MAILNOTIF {self.mail_to}: {code} {_said(said)}"
            if self.is_sms:
                why += " (carriers have closed several email-to-SMS gateways; see the README)"
            raise SendError(redact(why)) from err
        except smtplib.SMTPSenderRefused as err:
            raise SendError(
                redact(
                    f"the server refused MAIL_FROM {self.mail_from}: {err.smtp_code} "
                    f"{_said(err.smtp_error)}"
                )
            ) from err
        except smtplib.SMTPResponseException as err:
            raise SendError(
                redact(f"the SMTP server said {err.smtp_code} {_said(err.smtp_error)}")
            ) from err
        except smtplib.SMTPServerDisconnected as err:
            raise SendError(f"{self.host}:{self.port} closed the connection") from err
        except smtplib.SMTPException as err:  # an OSError too: before the socket errors below
            raise SendError(redact(f"SMTP failed: {err}")) from err
        except ssl.SSLCertVerificationError as err:
            raise SendError(
                f"the TLS certificate of {self.host} is not trusted ({err.verify_message})"
            ) from err
        except ssl.SSLError as err:
            raise SendError(f"TLS with {self.host}:{self.port} failed ({err.reason})") from err
        except socket.gaierror as err:
            raise SendError(f"cannot resolve {self.host} (no DNS: is the network down?)") from err
        except ConnectionRefusedError as err:
            raise SendError(f"{self.host}:{self.port} refused the connection") from err
        except TimeoutError as err:
            raise SendError(
                f"no answer from {self.host}:{self.port} in {self.timeout_s:g} s"
            ) from err
        except OSError as err:
            raise SendError(
                f"cannot reach {self.host}:{self.port} ({err.strerror or err})"
            ) from err

    def _deliver(self, msg: EmailMessage | None) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=_ehlo_name(),
                timeout=self.timeout_s,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, local_hostname=_ehlo_name(), timeout=self.timeout_s
            )
        with smtp:
            smtp.ehlo()
            tls = self.implicit_tls
            if not tls and self.starttls:
                if not smtp.has_extn("starttls"):
                    raise SendError(
                        f"{self.host}:{self.port} does not offer STARTTLS: use its TLS port "
                        "(SMTP_PORT = 465, or SMTP_SSL = True for another port)"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
                tls = True
            if self.user and not tls and not self.cleartext_allowed:
                raise SendError(
                    f"refusing to send SMTP_PASSWORD to {self.host}:{self.port} without TLS: "
                    "use its TLS port (SMTP_PORT = 465, or SMTP_SSL = True)"
                )
            if self.user:
                if not smtp.has_extn("auth"):
                    raise SendError(
                        f"{self.host}:{self.port} offers no login (AUTH) on this connection: "
                        "check SMTP_STARTTLS and SMTP_PORT, or leave SMTP_USER empty"
                    )
                smtp.login(self.user, self.password)
            if msg is not None:
                smtp.send_message(msg)


def _said(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


class AppriseChannel:
    """One NOTIFY_URLS entry, with its own Apprise object so only a failing one is retried.

    Apprise 2.x: notify() returns an AppriseResult (TIMEOUT distinct from FAILURE, per-service
    log lines that say why); `timeout=` bounds the call, and the outer deadline bounds the rest
    (DNS). Shown only as the plugin's privacy URL without its query string (header values given
    as `+Header=` are not masked by Apprise).
    """

    def __init__(self, url: str) -> None:
        """Load url; raise ValueError (without the URL in it) when Apprise cannot use it."""
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        if not self._apprise.add(url) or len(self._apprise) != 1:
            scheme = url.partition("://")[0]
            raise ValueError(f"Apprise does not understand this {scheme}:// URL")
        privacy = str(self._apprise[0].url(privacy=True))  # type: ignore[no-untyped-call]
        redact_secrets(url_secrets(url, privacy))
        self._name = redact(privacy.partition("?")[0])
        self._key = "apprise-" + hashlib.sha256(url.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        return self._key

    @property
    def name(self) -> str:
        return self._name

    def send(self, note: Note) -> None:
        result = self._apprise.notify(
            body=note.body, title=note.title, notify_type=note.severity, timeout=APPRISE_CALL_S
        )
        if result:
            return
        if result.status == apprise.AppriseResultStatus.TIMEOUT:
            raise SendError(f"no answer in {APPRISE_CALL_S:g} s")
        said = [
            entry.message
            for service in result.results
            for entry in service.logs()
            if entry.level in ("WARNING", "ERROR", "CRITICAL")
        ]
        raise SendError(redact(said[-1] if said else f"not delivered ({result.status.name})"))


def url_secrets(url: str, privacy_url: str) -> list[str]:
    """Return the pieces of url that its privacy form hides: tokens, passwords."""

    def pieces(text: str) -> set[str]:
        return {unquote(p) for p in re.split(r"[/:@?&=#,;]+", text) if p}

    hidden = pieces(url) - pieces(privacy_url)
    # Apprise leaves header values (`+X-Api-Key=...`) unmasked in its privacy form: those whose
    # name says credential are hidden here.
    query = url.partition("?")[2].partition("#")[0]
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and key.startswith("+") and value and _CREDENTIAL_HEADER_RE.search(key):
            hidden.add(unquote(value))
    return [url, *sorted(p for p in hidden if len(p) >= _MIN_SECRET_LEN)]


def _channels(config: Config) -> tuple[list[Channel], list[tuple[str, str]]]:
    """Build the configured channels; also (name, problem) for the ones that cannot work."""
    channels: list[Channel] = []
    problems: list[tuple[str, str]] = []
    if config.mail_to and config.smtp_host:
        channels.append(SmtpChannel.from_config(config))
    elif config.mail_to:
        problems.append((config.mail_to, "SMTP_HOST is not set: no email can be sent"))
    elif config.smtp_host:
        problems.append((f"email via {config.smtp_host}", "MAILNOTIF is not set: no recipient"))
    seen: set[str] = set()
    for number, url in enumerate(config.notify_urls, start=1):
        if url in seen:
            continue
        seen.add(url)
        try:
            channels.append(AppriseChannel(url))
        except ValueError as err:
            problems.append((f"NOTIFY_URLS entry {number}", str(err)))
    return channels, problems

"""What `loadshed check` says about a config before and beyond reaching the devices.

- `placeholders`: the example's values still in config.py (its password, its documentation
  addresses, its made-up Tuya plug). `check` then says "fill in config.py" and reaches nothing:
  four wrong diagnoses of devices that do not exist help nobody.
- `safety`: rules that would hurt the house in an outage: shedding the network that the alerts
  and the SSH shutdowns need, or the plug of the PC loadshed runs on; a carrier's email-to-SMS
  gateway that no longer delivers.
- `alert_problems`: an alert path that cannot work, found without sending anything.

Pure, except `alert_problems`, which asks Apprise whether it knows each URL's scheme.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Final

from loadshed.computers import Computer
from loadshed.config import Config

EXAMPLE_PASSWORD: Final = "change-me"
EXAMPLE_TUYA_ID: Final = "bf0123456789abcdefgh"
EXAMPLE_SMTP_HOST: Final = "smtp.example.com"
DOCUMENTATION_NETS: Final = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
NETWORK_WORDS: Final = re.compile(
    r"\b(router|modem|switch|access ?point|ap|mesh|wi-?fi|ont|gateway|firewall|hub)\b", re.I
)
# Carrier email-to-SMS gateways that stopped delivering (README "Alerts"), and when.
CLOSED_GATEWAYS: Final = {
    "tmomail.net": "T-Mobile stopped delivering in December 2024",
    "txt.att.net": "AT&T closed it on 17 June 2025",
    "mms.att.net": "AT&T closed it on 17 June 2025",
}
FADING_GATEWAYS: Final = {
    "vtext.com": "Verizon closes it on 31 March 2027, and it is already unreliable",
    "vzwpix.com": "Verizon closes it on 31 March 2027, and it is already unreliable",
}


def placeholders(config: Config) -> list[str]:
    """The example's values still in config.py, each with what to put instead."""
    found = []
    if config.powerwall_api == "legacy" and config.powerwall_password == EXAMPLE_PASSWORD:
        found.append("PWPASS is the example's: the customer password you set on the gateway")
    if _documentation(config.powerwall.host):
        found.append(f"PWIPNAME {config.powerwall} is an example address: your gateway's")
    for host in config.kasa_hosts:
        if _documentation(host.host):
            found.append(f"KASA_HOSTS has the example address {host}: `loadshed discover`")
    for plug in config.tuya_devices:
        if plug.id == EXAMPLE_TUYA_ID or _documentation(plug.ip):
            found.append(f"TUYA_DEVICES has the example plug {plug.name!r}: `loadshed discover`")
    if config.smtp_host == EXAMPLE_SMTP_HOST:
        found.append("SMTP_HOST is the example's: your mail provider's SMTP server, or empty")
    return found


def _documentation(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in DOCUMENTATION_NETS)


def safety(
    config: Config,
    rules: Mapping[str, int],
    computers: Sequence[Computer],
    monitor_names: Sequence[str] = (),
) -> list[str]:
    """Warnings about rules that would hurt in an outage. `rules`: each device's SHED_BELOW
    rule by name; `monitor_names`: what this PC is called (its host name, its addresses)."""
    warnings = []
    for name, rule in rules.items():
        if rule > 0 and NETWORK_WORDS.search(name) and name not in config.grid_canary:
            warnings.append(
                f"{name} looks like network gear and would be shed (rule {rule}): the alerts and "
                f"the SSH shutdowns need the network; mark it essential: SHED_BELOW[{name!r}] = 0"
            )
    own = {n.lower() for n in monitor_names if n}
    for computer in computers:
        if computer.powered_by and computer.host.lower() in own:
            plug = computer.powered_by
            if rules.get(plug, 0) > 0:
                warnings.append(
                    f"{plug} feeds {computer.name}, the PC loadshed runs on, and would be shed: "
                    f"mark it essential: SHED_BELOW[{plug!r}] = 0"
                )
    domain = config.mail_to.rpartition("@")[2].lower()
    if domain in CLOSED_GATEWAYS:
        warnings.append(
            f"MAILNOTIF uses {domain}: {CLOSED_GATEWAYS[domain]}; texts sent there are lost. Use "
            "a plain email address, or ntfy or Pushover through NOTIFY_URLS (README: Alerts)"
        )
    elif domain in FADING_GATEWAYS:
        warnings.append(
            f"MAILNOTIF uses {domain}: {FADING_GATEWAYS[domain]}; add ntfy or Pushover through "
            "NOTIFY_URLS so alerts still reach you (README: Alerts)"
        )
    return warnings


def monitor_names() -> list[str]:
    """What this PC may be called in computers.txt: its host names and loopback."""
    names = ["localhost", "127.0.0.1", "::1"]
    with contextlib.suppress(OSError):
        names += [socket.gethostname(), socket.gethostname().split(".")[0]]
    return names


def smtp_problem(config: Config) -> str | None:
    """Why the email alerts would not go out — the server silent, TLS refused, the login
    rejected — found by doing all of a send but the send; None when they would. Blocking."""
    if not (config.mail_to and config.smtp_host):
        return None
    from loadshed.notify.channels import SendError, SmtpChannel

    try:
        SmtpChannel.from_config(config).probe()
    except SendError as err:
        return f"email alerts to {config.mail_to} would fail: {err}"
    return None


def alert_problems(config: Config) -> list[str]:
    """An alert path that cannot work, found without sending anything."""
    problems = []
    if config.mail_to and not config.smtp_host:
        problems.append(
            "MAILNOTIF is set but SMTP_HOST is not: nothing can send the email "
            "(set SMTP_HOST, SMTP_PORT, SMTP_USER and SMTP_PASSWORD: README Alerts)"
        )
    if config.notify_urls:
        import apprise

        for number, url in enumerate(config.notify_urls, start=1):
            if not apprise.Apprise().add(url):
                scheme = url.split("://", 1)[0]
                problems.append(
                    f"NOTIFY_URLS entry {number} ({scheme}://…): Apprise cannot use it (an "
                    "unknown scheme, or a URL missing a part); see Apprise's list of services"
                )
    return problems

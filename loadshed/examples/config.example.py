# loadshed configuration. `loadshed init` writes a copy to fill in (mode 0600); or, from a clone:
#
#     cp config.example.py config.py && chmod 600 config.py
#
# The addresses below are documentation examples (192.0.2.x, RFC 5737) that reach nothing:
# replace each with your device's.
#
# config.py is Python and holds passwords: only its owner should read or write it.
# Every secret may instead come from the environment, which wins:
#     LOADSHED_PWPASS, LOADSHED_PW_GATEWAY_PASSWORD, LOADSHED_SMTP_PASSWORD,
#     LOADSHED_KASA_PASSWORD, LOADSHED_TUYAAPISECRET, LOADSHED_WINDOWS_PASSWORD,
#     LOADSHED_NUT_PASSWORD
# Check it with:  loadshed check

# --- The Powerwall ---------------------------------------------------------------------------
PWIPNAME = "192.0.2.50"           # the gateway's address on your LAN: host or host:port
PWPASS = "change-me"                # the customer password (the one you set on the gateway; recent
                                    # firmware refuses the default "last 5 of the serial")
PWEMAIL = ""                        # optional: sent with the login, as the gateway's web page does

# How to read the gateway (README "Which Powerwall API"): "legacy" (the customer login above),
# "tedapi" (Powerwall 3 or a refused local login: PWIPNAME = "192.168.91.1" on the gateway's
# own Wi-Fi, and the password on its QR sticker) or "v1r" (Powerwall 3 on your LAN, with an RSA
# key you registered with it).
POWERWALL_API = "legacy"
PW_GATEWAY_PASSWORD = ""            # tedapi: the gateway's QR-sticker password
PW_RSA_KEY = ""                     # v1r: path of the registered RSA key

# --- A second opinion on the grid (optional; README "A second opinion on the grid") -----------
GRID_CANARY = []                    # plugs on circuits the Powerwall does NOT back up
NUT_UPS = ""                        # "ups@host" or "ups@host:port": a UPS on a NUT server
NUT_USER = ""
NUT_PASSWORD = ""

# --- Who to tell -----------------------------------------------------------------------------
MAILNOTIF = "5551234567@vtext.com"  # SMS-by-email or any email address; see README "Alerts":
                                    # several carriers have closed their email-to-SMS gateways

# --- Tuya cloud (optional: only to list your Tuya plugs and their local keys) ------------------
TUYAAPIREGION = "us"                # us, us-e, eu, eu-w, in, sg, cn (your iot.tuya.com project)
TUYAAPIKEY = ""
TUYAAPISECRET = ""
TUYAAPIDEVICEID = ""                # the id of any one of your devices

# --- Timing (seconds) --------------------------------------------------------------------------
POLL_SECONDS = 2                    # how often to read the Powerwall (2)
OUTAGE_CONFIRM_SECONDS = 0          # off-grid this long before shedding (0: at once)
RESTORE_AFTER_SECONDS = 60          # grid back and stable this long before restoring (60)
SOURCES_DISAGREE_SECONDS = 60       # sources disagree: act on the Powerwall only after this more
SECONDARY_CONFIRM_SECONDS = 30      # Powerwall unreadable: a canary or UPS alone sheds after this

# --- TP-Link Kasa plugs and strips -------------------------------------------------------------
KASA_HOSTS = ["192.0.2.20", "192.0.2.21:9999"]  # host or host:port (9999); each strip
                                    # outlet becomes its own device, named by its alias in the app
KASA_USERNAME = ""                  # TP-Link account, only for newer (KLAP) firmware
KASA_PASSWORD = ""

# --- Tuya plugs (Smart Life, Gosund, Teckin, ...) ----------------------------------------------
# name, id, ip, key (16 characters) and version (a number: 3.3 or 3.4) are required;
# "port" (6668) and "dps" (1: the switch data point; 2 for a second outlet) are optional.
TUYA_DEVICES = [
    {"name": "Space heater", "id": "bf0123456789abcdefgh", "ip": "192.0.2.30",
     "key": "0123456789abcdef", "version": 3.3},
]

# --- Who is shed, and when ---------------------------------------------------------------------
# Per device name (Kasa alias, Tuya name, computer name): shed when the battery falls below this %.
# 0 = essential, never shed. 1-99 = shed during an outage below that %, back above it + 10 (solar).
# 100 = shed as soon as the house is off-grid.
SHED_BELOW = {"Freezer": 30, "Router": 0}
DEFAULT_SHED_BELOW = 100            # for every device not named above (100: shed at outage)

# --- Email (for MAILNOTIF) ---------------------------------------------------------------------
SMTP_HOST = "smtp.example.com"
SMTP_PORT = 587                     # 587 with STARTTLS, or 465 for implicit TLS
SMTP_USER = ""
SMTP_PASSWORD = ""
SMTP_STARTTLS = True                # a password is only ever sent over TLS (STARTTLS or 465)
SMTP_SSL = False                    # True: implicit TLS on SMTP_PORT (always so on port 465)
MAIL_FROM = "loadshed@example.com"

# --- More alert channels, as Apprise URLs (ntfys://topic, pover://user@token, tgram://...) ------
NOTIFY_URLS = []

# --- Computers (listed in computers.txt) -------------------------------------------------------
WINDOWS_PASSWORD = ""               # for `net rpc shutdown` from Linux/macOS; the user is in
                                    # computers.txt
SSH_CONFIG = ""                     # an ssh_config for `ssh -F` (default: your ~/.ssh/config)

# --- Files -------------------------------------------------------------------------------------
STATE_DIR = ""                      # default: the platform's user state dir
                                    # (~/.local/state/loadshed on Linux)

# --- The phone page (README "A page for your phone") -------------------------------------------
WEB_LISTEN = ""                     # "0.0.0.0:8470": the page on every address, port 8470; "": off
WEB_TOKEN = ""                      # shed/restore/pin from the page need it (16+ characters);
                                    # without it the page is read-only. Or LOADSHED_WEB_TOKEN

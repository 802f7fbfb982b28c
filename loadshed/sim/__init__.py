"""The simulated house: devices speaking the real wire protocols on loopback.

The Powerwall (HTTPS), Kasa plugs and strips (legacy XOR TCP, and KLAP over HTTP), Tuya plugs
(protocol 3.3 and 3.4), a battery model and fault switches. Everything binds 127.0.0.0/8 only;
`check_loopback` refuses any other address.
"""

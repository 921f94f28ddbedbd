"""The seed example's "... do some initialization (connect to the network and configure the
Thing) ..." for a simulated board on CPython, and Zerynth's built-ins the example uses.

Configured by the environment (set by the test):
    FOTA_SEED_FLASH, FOTA_SEED_BOARD  the board's flash file and layout
    FOTA_SEED_BROKER                  host:port of the MQTT broker
    FOTA_SEED_THING                   the thing name (also the MQTT client id)
    FOTA_SEED_CA                      the CA of the image server
    FOTA_SEED_SAMPLES                 how many samples the program publishes before it stops
fota.reset() ends the process with exit code 3: the board resets.
"""

import json
import os
import random as _random
import socket
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import adafruit_minimqtt.adafruit_minimqtt as MQTT
import adafruit_requests

from bootloader.formats.layout import load_board
from bootloader.sim.flash import Flash
from mcu import fota

RESET_EXIT = 3
publish_period = 100  # ms, as Zerynth's sleep() counts


class Thing:
    """What the seed's code uses of a Zerynth AWS Thing: its MQTT client and name."""

    def __init__(self, thingname, mqtt):
        self.thingname = thingname
        self.mqtt = mqtt


def random(a, b):
    """Zerynth's random(a, b): an integer in [a, b]."""
    return _random.randint(a, b)


_samples = [int(os.environ.get("FOTA_SEED_SAMPLES", "50"))]


def sleep(ms):
    """Zerynth's sleep(ms); ends the program after FOTA_SEED_SAMPLES samples."""
    time.sleep(ms / 1000)
    _samples[0] -= 1
    if _samples[0] <= 0:
        print("samples done", flush=True)
        sys.exit(0)


def _reset():
    running = fota.running_image()
    print(json.dumps({"reset": True, "running": running[0] if running else None}), flush=True)
    _flash.close()
    sys.exit(RESET_EXIT)


_layout = load_board(os.environ.get("FOTA_SEED_BOARD", "tiny"))
_flash = Flash.for_layout(_layout, os.environ["FOTA_SEED_FLASH"])
_host, _port = os.environ["FOTA_SEED_BROKER"].rsplit(":", 1)
_name = os.environ["FOTA_SEED_THING"]
_mqtt = MQTT.MQTT(
    broker=_host,
    port=int(_port),
    client_id=_name,
    socket_pool=socket,
    socket_timeout=0.1,
    recv_timeout=5,
    connect_retries=2,
)
fota.setup(
    _flash.area(_layout.slot0),
    _flash.area(_layout.slot1),
    requests_session=adafruit_requests.Session(
        socket, ssl.create_default_context(cafile=os.environ["FOTA_SEED_CA"])
    ),
    reset_fn=_reset,
    max_align=_layout.max_align,
    trailer_size=_layout.trailer_size(),
)
_mqtt.connect()
thing = Thing(_name, _mqtt)
print("running", fota.running_image()[0], flush=True)

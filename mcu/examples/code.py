# code.py for a CircuitPython board with its own network (ESP32-S3, Pico W): the seed's
# (Zerynth aws_iot_fota) example program, with adafruit_minimqtt and adafruit_requests.
#
# CIRCUITPY/
#   code.py                      this file
#   settings.toml                Wi-Fi and AWS IoT settings (below)
#   certs/                       AmazonRootCA1.pem, the thing's certificate and private key
#   lib/mcu/*.mpy                `just mcu-bundle` output
#   lib/adafruit_minimqtt/, lib/adafruit_requests.mpy, lib/adafruit_connection_manager.mpy,
#   lib/adafruit_ticks.mpy       from the Adafruit CircuitPython bundle
#   lib/mcuboot_slots.py         the board's MCUboot slots (see below)
#
# settings.toml:
#   CIRCUITPY_WIFI_SSID = "..."          CircuitPython joins the network before code.py runs
#   CIRCUITPY_WIFI_PASSWORD = "..."
#   AWS_IOT_ENDPOINT = "xxxxxxxx-ats.iot.eu-west-1.amazonaws.com"
#   AWS_THING_NAME = "my-thing"
#   AWS_CA_FILE = "/certs/AmazonRootCA1.pem"
#   AWS_CERT_FILE = "/certs/certificate.pem.crt"
#   AWS_KEY_FILE = "/certs/private.pem.key"
#   PUBLISH_PERIOD_S = 10
#
# mcuboot_slots: CircuitPython has no raw-flash API, so the board port provides MCUboot's
# two slots as flash areas (size, sector_size, write_size, erased_val, read, write, erase:
# see mcu/flash_area.py) laid out as in bootloader/boards/<board>.toml, plus TRAILER_SIZE
# (Layout.trailer_size() of that layout).  On MicroPython, mcu.flash_area.BlockDeviceArea
# over rp2.Flash() or esp32.Partition gives the same.

import json
import os
import random
import ssl
import time

import adafruit_minimqtt.adafruit_minimqtt as MQTT
import adafruit_requests
import mcuboot_slots
import microcontroller
import socketpool
import wifi

from mcu import fota, jobs


def read_file(path):
    with open(path) as f:
        return f.read()


THING = os.getenv("AWS_THING_NAME")
PUBLISH_PERIOD_S = int(os.getenv("PUBLISH_PERIOD_S") or 10)

pool = socketpool.SocketPool(wifi.radio)

# MQTT to AWS IoT Core: mutual TLS with the thing's certificate.
mqtt_tls = ssl.create_default_context()
mqtt_tls.load_verify_locations(cadata=read_file(os.getenv("AWS_CA_FILE")))
mqtt_tls.load_cert_chain(os.getenv("AWS_CERT_FILE"), os.getenv("AWS_KEY_FILE"))
mqtt = MQTT.MQTT(
    broker=os.getenv("AWS_IOT_ENDPOINT"),
    port=8883,
    is_ssl=True,
    client_id=THING,  # AWS IoT policies usually require the thing name as client id
    socket_pool=pool,
    ssl_context=mqtt_tls,
    keep_alive=60,
)

# HTTPS for the image (an S3 presigned URL): server authentication only.
requests = adafruit_requests.Session(pool, ssl.create_default_context())

fota.setup(
    mcuboot_slots.primary,
    mcuboot_slots.secondary,
    requests_session=requests,
    reset_fn=microcontroller.reset,
    max_align=8,
    trailer_size=mcuboot_slots.TRAILER_SIZE,
)

print("running", fota.running_image())
mqtt.connect()

# create an IoT Jobs object
myjobs = jobs.Jobs(mqtt, THING)

# check if there are FOTA jobs waiting to be performed
# This function executes a FOTA update if possible
# or confirms an already executed FOTA update
# (after an update, getting here -- network, MQTT and the Jobs API working -- is the new
# firmware's self-test: the job is confirmed and SUCCEEDED; a firmware that never gets
# here is reverted by MCUboot at the next reset, and the old one reports FAILED)
fota.handle_fota_jobs(myjobs, force=True)

while True:
    try:
        r = random.randint(0, 10)
        print("publish random sample...", r)
        mqtt.publish("dev/sample", json.dumps({"asample": r}))
        time.sleep(PUBLISH_PERIOD_S)
        # check for new incoming jobs
        # again, FOTA is executed if a correct FOTA job is queued
        fota.handle_fota_jobs(myjobs)
    except (MQTT.MMQTTException, OSError, jobs.JobsError) as exc:
        print("connection problem:", exc)
        time.sleep(PUBLISH_PERIOD_S)
        try:
            myjobs.reconnect()
        except (MQTT.MMQTTException, OSError) as again:
            print("reconnect failed:", again)

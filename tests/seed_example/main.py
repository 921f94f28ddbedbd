# The seed's example program (Zerynth aws_iot_fota documentation), unchanged but for its
# imports: the aws.iot shims map the seed's modules onto mcu.fota / mcu.jobs, and the
# seed's "... do some initialization ..." is the import of seed_board, which connects to
# the network, configures the Thing and provides Zerynth's built-ins random() and sleep().
import json

from aws.iot import fota as awsfota
from aws.iot import jobs
from seed_board import publish_period, random, sleep, thing

# fmt: off
# (from here on the seed's text, as printed)

# create an IoT Jobs object
myjobs = jobs.Jobs(thing)

# check if there are FOTA jobs waiting to be performed
# This function executes a FOTA update if possible
# or confirms an already executed FOTA update
awsfota.handle_fota_jobs(myjobs, force=True) # True, force

while True:
    r = random(0,10)
    print('publish random sample...',r)
    thing.mqtt.publish("dev/sample", json.dumps({ 'asample': r }))
    sleep(publish_period)
    # check for new incoming jobs
    # again, FOTA is executed if a correct FOTA job is queued
    awsfota.handle_fota_jobs(myjobs)

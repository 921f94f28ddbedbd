"""Direct mode's device code under a real MicroPython (as sources and as mpy-cross output).

MicroPython's hashlib here has no MD5 and its time module no monotonic(): the run goes through
mcu.md5 and the ticks_ms deadlines, the paths a CircuitPython-class board takes.  The guest
gets a RAM flash, an in-guest HTTP session and an MQTT client whose "service" answers the
Jobs topics; the whole handle_fota_jobs flow runs and its results are printed.
"""

from __future__ import annotations

import hashlib

import pytest
from fota_direct_kit import firmware, image_hash, layout

from tests.mpy import run_micropython

GUEST = r"""
import binascii, json
from mcu import fota, jobs, md5, mcuboot as mb
from mcu.flash_area import RamArea

V1 = binascii.unhexlify(V1_HEX)
V2 = binascii.unhexlify(V2_HEX)

def program(area, img):
    pad = (-len(img)) % area.write_size
    area.write(0, img + b"\xff" * pad)

pri = RamArea(PRI_SIZE, SECTOR, WRITE)
sec = RamArea(SEC_SIZE, SECTOR, WRITE)
program(pri, V1)

class Resp:
    def __init__(self, body):
        self.status_code = 200
        self.headers = {"content-length": str(len(body))}
        self.socket = None
        self.body = body
    def iter_content(self, n):
        for i in range(0, len(self.body), 300):
            yield self.body[i:i + 300]
    def close(self):
        pass

class Session:
    def get(self, url, stream=False, timeout=0):
        return Resp(V2)

DOC = {"bc_idx": 1, "bc_crc": MD5_HEX, "bc_size": len(V2), "bc_url": "https://x/fw.bin?sig=1"}

class Mqtt:
    # Answers the Jobs requests of one job, like the service would, in the next loop().
    _socket_timeout = 1
    def __init__(self):
        self.cbs = []
        self.inbox = []
        self.ex = {"jobId": "fw-1", "status": "QUEUED", "statusDetails": {}, "versionNumber": 1,
                   "executionNumber": 1, "jobDocument": DOC}
        self.log = []
    def add_topic_callback(self, f, cb):
        self.cbs.append((f, cb))
    def is_connected(self):
        return True
    def subscribe(self, topics, qos=0):
        pass
    def publish(self, topic, msg, retain=False, qos=0):
        req = json.loads(msg)
        rest = topic.split("/jobs/")[1]
        ex = self.ex
        body = {"clientToken": req["clientToken"]}
        if rest == "get":
            body["inProgressJobs"] = []
            body["queuedJobs"] = [{"jobId": "fw-1"}]
            if ex["status"] == "IN_PROGRESS":
                body["inProgressJobs"], body["queuedJobs"] = body["queuedJobs"], []
        elif rest == "fw-1/get":
            body["execution"] = ex
        elif rest == "fw-1/update":
            if req.get("expectedVersion") != ex["versionNumber"]:
                body["code"] = "VersionMismatch"
                self.inbox.append((topic + "/rejected", json.dumps(body)))
                return
            ex["status"] = req["status"]
            ex["statusDetails"] = req.get("statusDetails", ex["statusDetails"])
            ex["versionNumber"] += 1
            self.log.append((req["status"], ex["statusDetails"].get("phase")))
            body["executionState"] = {"status": ex["status"], "statusDetails": ex["statusDetails"],
                                      "versionNumber": ex["versionNumber"]}
        self.inbox.append((topic + "/accepted", json.dumps(body)))
    def loop(self, timeout=1):
        while self.inbox:
            topic, text = self.inbox.pop(0)
            for f, cb in self.cbs:
                if f.endswith("/+") and topic.startswith(f.split("+")[0]) or f == topic:
                    cb(self, topic, text)

mqtt = Mqtt()
myjobs = jobs.Jobs(mqtt, "thing-1")
fota.setup(pri, sec, requests_session=Session(), reset_fn=lambda: print("reset"),
           trailer_size=TRAILER, chunk_size=256, log=lambda m: None)
print("md5", md5.MD5(V2).hexdigest())
print("needs reset", fota.handle_fota_jobs(myjobs, force=True, disconnect_mqtt=False))
print("log", mqtt.log)
print("details", mqtt.ex["statusDetails"]["hash"], mqtt.ex["statusDetails"]["version"])
print("swap", mb.SWAP_NAMES[mb.swap_type(pri, sec)])
bad = dict(DOC, bc_crc="0" * 32)
print("bad update", fota.update(bad), fota.last_reason.split(":")[0])
"""


@pytest.mark.parametrize("compiled", [False, True], ids=["source", "mpy"])
def test_handle_fota_jobs_runs_under_micropython(compiled: bool) -> None:
    lay = layout()
    v1, v2 = firmware("1.0.0"), firmware("1.1.0", 1800)
    code = GUEST
    for name, value in {
        "V1_HEX": repr(v1.hex()),
        "V2_HEX": repr(v2.hex()),
        "MD5_HEX": repr(hashlib.md5(v2).hexdigest()),
        "PRI_SIZE": str(lay.slot0.size),
        "SEC_SIZE": str(lay.slot1.size),
        "SECTOR": str(lay.sector_size),
        "WRITE": str(lay.write_size),
        "TRAILER": str(lay.trailer_size()),
    }.items():
        code = code.replace(name, value)
    stdout, _fuel = run_micropython(code, compiled=compiled)
    lines = stdout.splitlines()
    assert lines[0] == f"md5 {hashlib.md5(v2).hexdigest()}"
    assert lines[1:3] == ["reset", "needs reset True"]
    # downloading, progress reports (MQTT stays up here), then testing
    assert lines[3].startswith("log [('IN_PROGRESS', 'downloading'), "), stdout
    assert lines[3].endswith(", ('IN_PROGRESS', 'testing')]"), stdout
    assert lines[4] == f"details {image_hash(v2)} 1.1.0"
    assert lines[5] == "swap test"
    assert lines[6] == "bad update False MD5 mismatch"

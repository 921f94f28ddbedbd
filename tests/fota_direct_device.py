"""One boot of a simulated direct-mode board, as its own process.

mcu/examples/code.py on CPython: adafruit_minimqtt over CPython's socket module, an
adafruit_requests Session over socket + ssl, the flash file as the board's flash.  MCUboot's
model runs between two runs (in the test), so each run is the firmware after a reset.

    python tests/fota_direct_device.py --flash F --broker 127.0.0.1:1883 --thing T --ca CA
        [--no-force] [--keep-mqtt] [--no-auto-reset] [--cbk] [--polls N]

Prints one JSON line ``{"result": ..., "running": ..., "confirmed": ..., ...}`` and exits 0;
fota.reset() prints ``{"reset": true, ...}`` and exits with RESET_EXIT (the board resets).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import adafruit_minimqtt.adafruit_minimqtt as MQTT  # noqa: E402
import adafruit_requests  # noqa: E402

from bootloader.formats.layout import load_board  # noqa: E402
from bootloader.sim.flash import Flash  # noqa: E402
from mcu import bootutil, fota, jobs  # noqa: E402

RESET_EXIT = 3
SOCKET_TIMEOUT_S = 0.1  # minimqtt's loop() step; a board keeps the default of 1 s


class Recorder:
    """The HTTP session, noting whether MQTT was connected when each download started."""

    def __init__(self, session: Any, mqtt: MQTT.MQTT) -> None:
        self.session = session
        self.mqtt = mqtt
        self.connected_at_get: list[bool] = []

    def get(self, url: str, **kw: Any) -> Any:
        self.connected_at_get.append(self.mqtt.is_connected())
        return self.session.get(url, **kw)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--flash", required=True)
    p.add_argument("--board", default="tiny")
    p.add_argument("--broker", required=True)
    p.add_argument("--thing", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--no-force", action="store_true")
    p.add_argument("--keep-mqtt", action="store_true")
    p.add_argument("--no-auto-reset", action="store_true")
    p.add_argument("--cbk", action="store_true")
    p.add_argument("--polls", type=int, default=1, help="calls of handle_fota_jobs")
    args = p.parse_args()

    layout = load_board(args.board)
    flash = Flash.for_layout(layout, args.flash)
    primary, secondary = flash.area(layout.slot0), flash.area(layout.slot1)
    host, port = args.broker.rsplit(":", 1)

    mqtt = MQTT.MQTT(
        broker=host,
        port=int(port),
        client_id=args.thing,
        socket_pool=socket,
        socket_timeout=SOCKET_TIMEOUT_S,  # type: ignore[arg-type]
        recv_timeout=5,
        connect_retries=2,
    )
    http_tls = ssl.create_default_context(cafile=args.ca)
    session = Recorder(adafruit_requests.Session(socket, http_tls), mqtt)
    report: dict[str, Any] = {}

    def reset() -> None:
        report["reset"] = True
        finish(report, session, mqtt, primary)
        flash.close()
        sys.exit(RESET_EXIT)

    fota.setup(
        primary,
        secondary,
        requests_session=session,
        reset_fn=reset,
        max_align=layout.max_align,
        trailer_size=layout.trailer_size(),
        chunk_size=512,
    )
    mqtt.connect()
    myjobs = jobs.Jobs(mqtt, args.thing, timeout_s=10)
    handled: list[str] = []

    def job_cbk(job: jobs.Job) -> None:
        handled.append(job.jobid)
        job.update(
            jobs.SUCCEEDED, {"handled_by": "job_cbk", "operation": job.document["operation"]}
        )

    if args.no_force:
        myjobs.subscribe()  # notifications reach us from now on
        print("subscribed", flush=True)
    result = False
    for _ in range(max(1, args.polls)):
        result = fota.handle_fota_jobs(
            myjobs,
            force=not args.no_force,
            disconnect_mqtt=not args.keep_mqtt,
            auto_reset=not args.no_auto_reset,
            job_cbk=job_cbk if args.cbk else None,
        )
        if result:
            break
    report.update(result=result, handled=handled)
    finish(report, session, mqtt, primary)
    mqtt.disconnect()
    flash.close()
    return 0


def finish(report: dict[str, Any], session: Recorder, mqtt: MQTT.MQTT, primary: Any) -> None:
    running = fota.running_image()
    report.update(
        running=running[0] if running else None,
        confirmed=bootutil.is_confirmed(primary),
        connected_at_get=session.connected_at_get,
        connected_after=mqtt.is_connected(),
        last_reason=fota.last_reason,
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Direct mode end to end, real peers: the device code (mcu.fota, mcu.jobs) with the real
adafruit_minimqtt and adafruit_requests, against mosquitto, the local jobs service and its
HTTPS file server (presigned-style URLs), on the flash model, with MCUboot's model booting
between runs.  Every device run is a new process on the same flash file: a reset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fota_direct_kit import firmware, image_hash, native_doc, seed_doc
from fota_direct_stack import RESET_EXIT, THING, Stack, open_stack
from paho.mqtt.enums import CallbackAPIVersion

from mcu import mcuboot as mb


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {"1.0.0": firmware("1.0.0"), "1.1.0": firmware("1.1.0", 1800)}


@pytest.fixture
def stack(tmp_path: Path, images: dict[str, bytes]) -> Iterator[Stack]:
    with open_stack(tmp_path, images) as s:
        yield s


def test_update_from_1_0_0_to_1_1_0_across_the_reboot(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    stack.create("fw-110", native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0"))

    first = stack.device()
    assert first.code == RESET_EXIT and first.report["reset"] is True
    assert first.report["running"] == "1.0.0"
    ex = stack.execution("fw-110")
    assert ex["status"] == "IN_PROGRESS"
    assert ex["details"] == {"phase": "testing", "hash": image_hash(new), "version": "1.1.0"}
    assert "X-Amz-Signature" not in first.stdout  # the presigned URL is never printed

    booted = stack.boot()
    assert (booted.swap_type, booted.booted.version) == ("test", "1.1.0")  # type: ignore[union-attr]
    assert not booted.booted.confirmed  # type: ignore[union-attr]

    second = stack.device()  # a new process: the new firmware's first run
    assert second.code == 0 and second.report["result"] is False
    assert second.report["running"] == "1.1.0" and second.report["confirmed"] is True
    ex = stack.execution("fw-110")
    assert ex["status"] == "SUCCEEDED"
    assert ex["details"]["phase"] == "confirmed" and ex["details"]["version"] == "1.1.0"

    again = stack.boot()  # confirmed: no revert
    assert (again.swap_type, again.booted.version) == ("none", "1.1.0")  # type: ignore[union-attr]


def test_new_image_that_never_confirms_is_reverted_and_fails(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    stack.create("fw-110", native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0"))
    assert stack.device().code == RESET_EXIT
    assert stack.boot().booted.version == "1.1.0"  # type: ignore[union-attr]
    # The new firmware dies before it confirms; the next reset reverts.
    reverted = stack.boot()
    assert (reverted.swap_type, reverted.booted.version) == ("revert", "1.0.0")  # type: ignore[union-attr]
    run = stack.device()
    assert run.code == 0 and run.report["running"] == "1.0.0"
    ex = stack.execution("fw-110")
    assert ex["status"] == "FAILED"
    assert ex["details"]["reason"].startswith("reverted to 1.0.0")
    assert ex["details"]["version"] == "1.1.0"


def test_bad_md5_fails_with_nothing_marked_for_boot(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    (stack.files.directory / "app.bin").write_bytes(new)
    stack.create("fw-bad", seed_doc(stack.files.url_for("app.bin"), new, md5="00" * 16))
    run = stack.device()
    assert run.code == 0 and run.report["result"] is False and "reset" not in run.report
    ex = stack.execution("fw-bad")
    assert ex["status"] == "FAILED"
    assert ex["details"]["reason"].startswith("MD5 mismatch")
    state, swap = stack.slot_state()
    assert state.magic == mb.MAGIC_UNSET and swap == mb.SWAP_NONE
    assert stack.boot().booted.version == "1.0.0"  # type: ignore[union-attr]


def test_non_fota_job_reaches_job_cbk(stack: Stack) -> None:
    stack.create("reboot-1", {"operation": "reboot"})
    run = stack.device("--cbk")
    assert run.report["handled"] == ["reboot-1"] and run.report["result"] is False
    assert stack.execution("reboot-1") == {
        "status": "SUCCEEDED",
        "details": {"handled_by": "job_cbk", "operation": "reboot"},
    }


def test_auto_reset_false_returns_true(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    stack.create("fw-110", native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0"))
    run = stack.device("--no-auto-reset")
    assert run.code == 0 and run.report["result"] is True and "reset" not in run.report
    _, swap = stack.slot_state()
    assert swap == mb.SWAP_TEST  # marked: the caller resets when it suits it


def test_disconnect_mqtt_is_honoured(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    stack.create("fw-110", native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0"))
    run = stack.device("--no-auto-reset")
    assert run.report["connected_at_get"] == [False]  # one TLS socket at a time
    assert run.report["connected_after"] is True
    assert stack.connections() == 2  # connected, disconnected for the download, reconnected
    assert stack.execution("fw-110")["details"]["phase"] == "testing"  # reported after it


def test_keep_mqtt_connected_when_asked(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    stack.create("fw-110", native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0"))
    run = stack.device("--no-auto-reset", "--keep-mqtt")
    assert run.report["result"] is True
    assert run.report["connected_at_get"] == [True]
    assert stack.connections() == 1


def test_notification_starts_the_update_without_force(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    doc = native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0")
    # Without force the device asks nothing until notify / notify-next announce a job: the
    # job is created once it has subscribed, and its polls (0.1 s each) take the news in.
    run = stack.device(
        "--no-force",
        "--no-auto-reset",
        "--polls",
        "100",
        when=("subscribed", lambda: stack.create("fw-110", doc)),
    )
    assert run.report["result"] is True
    assert stack.execution("fw-110")["details"]["phase"] == "testing"


def test_without_force_and_without_news_nothing_is_asked(stack: Stack) -> None:
    new = stack.images["1.1.0"]
    announced = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_message = lambda _c, _u, msg: announced.set()
    watcher.connect(stack.broker.host, stack.broker.port)
    watcher.subscribe(f"$aws/things/{THING}/jobs/notify", qos=1)
    watcher.loop_start()
    try:
        time_to_subscribe = threading.Event()
        watcher.on_subscribe = lambda *_a: time_to_subscribe.set()
        watcher.subscribe(f"$aws/things/{THING}/jobs/notify-next", qos=1)
        assert time_to_subscribe.wait(10)
        stack.create("fw-110", native_doc(stack.publish("app-1.1.0.bin", new), new, "1.1.0"))
        assert announced.wait(10)  # the news went out before the device listened
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    run = stack.device("--no-force", "--no-auto-reset", "--polls", "3")
    assert run.report["result"] is False  # queued before the device listened: force=True finds it
    assert stack.execution("fw-110")["status"] == "QUEUED"

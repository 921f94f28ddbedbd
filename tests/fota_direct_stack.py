"""The real-peer stack for direct-mode tests: mosquitto, the local jobs service with its
HTTPS file server, a board's flash file, and the board's firmware run as processes.

    with open_stack(tmp_path, images) as stack:
        stack.create("fw-1", doc)
        run = stack.device()          # one boot of tests/fota_direct_device.py
        stack.boot()                  # MCUboot's model at the reset

Every wait is bounded: each firmware run (RUN_TIMEOUT_S), the lines it is waited on for.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fota_direct_kit import layout, new_flash

from bootloader.sim.flash import Flash
from bootloader.sim.model.boot import BootResult, boot
from harness.mosquitto import Mosquitto
from localjobs.fileserver import FileServer
from localjobs.service import JobsService
from localjobs.store import JobStore
from mcu import mcuboot as mb

DEVICE: Final = Path(__file__).resolve().parent / "fota_direct_device.py"
RESET_EXIT: Final = 3
RUN_TIMEOUT_S: Final = 60.0
THING: Final = "direct-board-1"


@dataclass
class Run:
    code: int
    report: dict[str, Any] | None
    stdout: str
    stderr: str


class Stack:
    def __init__(
        self,
        tmp: Path,
        broker: Mosquitto,
        store: JobStore,
        files: FileServer,
        images: dict[str, bytes],
    ) -> None:
        self.tmp = tmp
        self.broker = broker
        self.store = store
        self.files = files
        self.images = images
        self.layout = layout()
        self.flash_path = tmp / "board-flash.bin"
        new_flash(self.layout, self.flash_path, images["1.0.0"]).close()

    def publish(self, name: str, data: bytes) -> str:
        """Put an image on the file server; the job document gets AWS's placeholder."""
        (self.files.directory / name).write_bytes(data)
        return f"${{aws:iot:s3-presigned-url:https://127.0.0.1:{self.files.port}/files/{name}}}"

    def create(self, job_id: str, doc: dict[str, Any]) -> None:
        self.store.create_job(job_id, [THING], json.dumps(doc))

    def execution(self, job_id: str) -> dict[str, Any]:
        (e,) = self.store.describe(job_id).executions
        return {"status": e.status, "details": dict(e.status_details)}

    def command(self, *flags: str) -> list[str]:
        return [
            sys.executable,
            "-u",
            str(DEVICE),
            "--flash",
            str(self.flash_path),
            "--board",
            self.layout.name,
            "--broker",
            f"{self.broker.host}:{self.broker.port}",
            "--thing",
            THING,
            "--ca",
            str(self.files.ca_path),
            *flags,
        ]

    def device(self, *flags: str, when: tuple[str, Callable[[], None]] | None = None) -> Run:
        """One boot of the test firmware; ``when=(text, action)``: action once it prints text."""
        run = self.run(self.command(*flags), when=when)
        assert run.report is not None, f"the device printed no report:\n{run.stdout}"
        return run

    def run(
        self,
        cmd: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        when: tuple[str, Callable[[], None]] | None = None,
    ) -> Run:
        """Run a firmware process to its end (exit 0, or RESET_EXIT: fota.reset())."""
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines: queue.Queue[str | None] = queue.Queue()
        errors: list[str] = []

        def pump() -> None:
            for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        readers = [
            threading.Thread(target=pump, daemon=True),
            threading.Thread(
                target=lambda: errors.append(proc.stderr.read()),  # type: ignore[union-attr]
                daemon=True,
            ),
        ]
        for r in readers:
            r.start()
        seen: list[str] = []
        try:
            pending = when
            while True:
                line = lines.get(timeout=RUN_TIMEOUT_S)
                if line is None:
                    break
                seen.append(line)
                if pending is not None and pending[0] in line:
                    pending[1]()
                    pending = None
            proc.wait(RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(RUN_TIMEOUT_S)
            for r in readers:
                r.join(RUN_TIMEOUT_S)
        stdout, stderr = "".join(seen), "".join(errors)
        assert when is None or pending is None, f"the device never printed {when[0]!r}:\n{stdout}"
        assert proc.returncode in (0, RESET_EXIT), f"exit {proc.returncode}:\n{stdout}\n{stderr}"
        reports = [x for x in stdout.splitlines() if x.startswith("{")]
        report = json.loads(reports[-1]) if reports else None
        return Run(proc.returncode, report, stdout, stderr)

    def boot(self) -> BootResult:
        """MCUboot runs at the reset."""
        with Flash.for_layout(self.layout, self.flash_path) as flash:
            result = boot(flash, self.layout)
        assert result.booted is not None, result.panic
        return result

    def slot_state(self) -> tuple[mb.SwapState, int]:
        with Flash.for_layout(self.layout, self.flash_path) as flash:
            pri, sec = flash.area(self.layout.slot0), flash.area(self.layout.slot1)
            return mb.read_swap_state(sec), mb.swap_type(pri, sec)

    def connections(self) -> int:
        """How many times the device connected to the broker."""
        text = self.broker.log_text()
        return sum(
            1
            for line in text.splitlines()
            if "New client connected" in line and f" as {THING} " in line
        )


@contextlib.contextmanager
def open_stack(tmp: Path, images: dict[str, bytes]) -> Iterator[Stack]:
    store = JobStore(tmp / "jobs.db")
    try:
        with Mosquitto(tmp) as broker, FileServer(tmp / "files", tmp / "state") as files:
            service = JobsService(
                store, broker.host, broker.port, presign=files.presign, poll_interval_s=0.2
            )
            service.start()
            try:
                yield Stack(tmp, broker, store, files, images)
            finally:
                service.stop()
    finally:
        store.close()

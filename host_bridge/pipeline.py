"""One firmware job, from its document to its outcome.

Parse the document (unusable, or too large for the device: REJECTED) -> IN_PROGRESS ->
download + verify -> sign if raw -> the device update flow -> SUCCEEDED only when the new image
runs confirmed, else FAILED with the reason.  The phase is persisted (SQLite) and mirrored in
``statusDetails``, so a restarted bridge resumes the device from its phase; a job id that
finished is never handled again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from fota_common.errors import BridgeError
from host_bridge.device import DeviceUpdater, UpdateOptions
from host_bridge.image.download import Downloader
from host_bridge.image.prepare import is_mcuboot_image, prepare
from host_bridge.image.sign import SigningParams
from host_bridge.jobs.documents import DocumentError, FirmwareJob, parse_document
from host_bridge.jobs.received import DOCUMENT_CHARS
from host_bridge.redact import redact_url
from host_bridge.reporting import DEVICE_TERMINAL, TERMINAL, JobReporting, Stop
from host_bridge.store import InFlight

log = logging.getLogger("fota.bridge")


def too_large_for(job: FirmwareJob, layout: Any) -> str | None:
    """Why the document's image cannot fit the device's slot, or None (size unknown, or fits).

    A raw binary (``signed: false``) grows by at least the image header when it is signed.
    """
    if job.size is None or layout is None:
        return None
    limit = int(layout.max_image_size())
    size = job.size + (int(layout.header_size) if job.signed is False else 0)
    if size <= limit:
        return None
    what = (
        f"{job.size} bytes + a {layout.header_size}-byte header"
        if job.signed is False
        else (f"{job.size} bytes")
    )
    return (
        f"the image ({what}) does not fit the device's slot: {layout.name} holds at most "
        f"{limit} bytes per image"
    )


def received_chars(execution: dict[str, Any] | None) -> int | None:
    """The job document's length as received (see host_bridge.jobs.received), if known."""
    length = execution.get(DOCUMENT_CHARS) if execution is not None else None
    return length if isinstance(length, int) else None


class JobPipeline(JobReporting):
    """The job-handling half of a device worker (see :class:`host_bridge.daemon.DeviceWorker`)."""

    def handle(self, execution: dict[str, Any]) -> None:

        thing = self.device.thing
        job_id = str(execution.get("jobId", ""))
        status = str(execution.get("status", "QUEUED"))
        if not job_id or status in TERMINAL:
            return
        version = execution.get("versionNumber")
        self.version = version if isinstance(version, int) else None
        done = self.bridge.store.outcome(thing, job_id)
        if done is not None:
            log.info("%s: job %s was already handled (%s)", thing, job_id, done[0])
            if done[0] in DEVICE_TERMINAL:
                self.current = job_id
                self.redeliver(job_id, *done)
            return
        self.current = job_id
        document = execution.get("jobDocument")
        raw_len = received_chars(execution)
        cfg = self.bridge.cfg
        try:
            job = parse_document(
                document,
                raw_length=raw_len,
                allow_http=cfg.allow_http,
                allowed_hosts=cfg.allowed_hosts,
            )
        except DocumentError as exc:
            self.finish(job_id, "REJECTED", str(exc), "validating")
            return
        if not isinstance(job, FirmwareJob):
            if self.bridge.on_other_job is not None:
                self.bridge.on_other_job(thing, execution)
                return
            if cfg.other_jobs == "ignore":
                return
            self.finish(
                job_id,
                "REJECTED",
                f"not a firmware job (operation "
                f"'{getattr(job, 'operation', None)}'); no handler configured",
                "",
            )
            return
        problem = too_large_for(job, self.bridge.layout_for(self.device))
        if problem is not None:  # the document cannot work for this device: before IN_PROGRESS
            self.finish(job_id, "REJECTED", problem, "validating")
            return
        saved = self.bridge.store.inflight(thing)
        if saved is None or saved.job_id != job_id:
            saved = InFlight(
                thing, job_id, execution.get("executionNumber"), self.version, "downloading"
            )
            self.bridge.store.save(saved)
        elif saved.phase != "downloading":
            log.info(
                "%s: job %s: resuming (was %s at %d bytes)",
                thing,
                job_id,
                saved.phase,
                saved.offset,
            )
        log.info(
            "%s: job %s: firmware %s from %s",
            thing,
            job_id,
            job.version or "?",
            redact_url(job.url),
        )
        try:
            self.run_job(job_id, job, saved)
        except Stop:
            raise
        except DocumentError as exc:  # the file contradicts its document: retrying cannot help
            self.finish(job_id, "REJECTED", str(exc), self.phase_of(thing))
        except BridgeError as exc:
            self.finish(job_id, "FAILED", str(exc), self.phase_of(thing))
        except Exception as exc:  # a bug must not leave the job IN_PROGRESS forever
            log.exception("%s: job %s: unexpected error", thing, job_id)
            self.finish(
                job_id,
                "FAILED",
                f"bridge internal error: {type(exc).__name__}: {exc}",
                self.phase_of(thing),
            )

    def phase_of(self, thing: str) -> str:
        saved = self.bridge.store.inflight(thing)
        return saved.phase if saved else ""

    def set_phase(self, saved: InFlight, phase: str, extra: dict[str, str] | None = None) -> None:
        self.checkpoint()
        saved.phase = phase
        self.bridge.store.save(saved)
        details = {"phase": phase}
        details.update(extra or {})
        self.tell(details)

    def run_job(self, job_id: str, job: Any, saved: InFlight) -> None:

        cfg = self.bridge.cfg
        thing = self.device.thing
        self.set_phase(saved, "downloading")
        downloader = Downloader(
            cache_dir=cfg.state_dir / "cache",
            ca_file=cfg.download_ca,
            allow_http=cfg.allow_http,
            allowed_hosts=cfg.allowed_hosts,
        )
        layout = self.bridge.layout_for(self.device)
        max_size = layout.max_image_size() if layout else None

        def refresh_url() -> str:
            fresh = self.bridge.jobs.describe(thing, job_id)
            doc = fresh.get("jobDocument") if fresh else None
            again = parse_document(
                doc,
                raw_length=received_chars(fresh),
                allow_http=cfg.allow_http,
                allowed_hosts=cfg.allowed_hosts,
            )
            return str(getattr(again, "url", job.url))

        target = cfg.state_dir / "downloads" / f"{thing}.img"
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = downloader.fetch(
            job,
            target,
            max_size=max_size,
            refresh_url=refresh_url,
            progress=lambda d, t: self.progress("downloading", d, t if t is not None else 0),
        )
        saved.image_sha256 = result.sha256.hex()
        self.set_phase(saved, "verifying")
        data = Path(result.path).read_bytes()
        params = SigningParams.from_layout(layout) if layout else SigningParams()
        if job.signed is True and not is_mcuboot_image(data):
            raise DocumentError(
                "the job says signed: true but the file is not an MCUboot image "
                "(no image header); it is not signed here: sign it, or set signed: false"
            )
        if job.signed is False or not is_mcuboot_image(data):
            self.set_phase(saved, "signing")
        image = prepare(
            data,
            trusted_keys=self.bridge.trusted_keys,
            signing_key=cfg.signing_key,
            version=job.version,
            params=params,
            max_image_size=max_size,
        )
        saved.image_hash = image.hash.hex()
        detail = {"version": image.version, "hash": image.hash.hex()}
        self.set_phase(saved, "uploading", detail)
        client = self.bridge.client_for(self.device)
        opts = UpdateOptions(
            policy=cfg.policy,
            confirm_timeout_s=cfg.confirm_timeout_s,
            boot_timeout_s=cfg.boot_timeout_s,
        )

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase == "uploading":
                self.save_offset(saved, done)
                self.progress("uploading", done, total, detail)
            elif phase != saved.phase:
                saved.phase = phase
                self.bridge.store.save(saved)
                self.tell({"phase": phase, **detail})

        try:
            outcome = DeviceUpdater(client, opts, on_progress).update(image)
        finally:
            client.link.close()
        up = outcome.upload
        if up is not None:
            log.info(
                "%s: job %s: uploaded %d bytes in %.1f s%s",
                thing,
                job_id,
                up.size,
                up.seconds,
                f"; resumed upload at {up.resumed_from}" if up.resumed_from else "",
            )
        if outcome.status == "confirmed":
            self.finish(job_id, "SUCCEEDED", "", "confirming", detail)
        else:
            self.finish(job_id, "FAILED", outcome.reason or outcome.status, outcome.phase, detail)

    def save_offset(self, saved: InFlight, done: int) -> None:
        now = time.monotonic()
        if now - self._last_saved >= 1.0:
            self._last_saved = now
            saved.offset = done
            self.bridge.store.save(saved)

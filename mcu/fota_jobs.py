# Direct mode's job flow, behind mcu.fota.handle_fota_jobs(): which pending job to take,
# its statusDetails through downloading -> testing -> confirmed, the attempt count across
# resets, and the check after the reset that the new image runs (SUCCEEDED) or that MCUboot
# reverted (FAILED).  Built on mcu.fota's update(), test() and confirm(), whose module
# state (setup(), last_reason, the image verified) it reads; use it through mcu.fota.

from mcu import bootutil, fota, fota_doc
from mcu import jobs as jobs_api
from mcu import mcuboot as mb
from mcu.fota_slot import hexstr

MAX_ATTEMPTS = 3  # downloads of one job before it is FAILED (each reboot mid-update is one)
MAX_JOBS_PER_CALL = 20  # AWS lists at most 10 IN_PROGRESS and 10 QUEUED executions

_DONE = 0
_RESET = 1


def _finish(job, status, details):
    if job.update(status, details):
        fota._say("job %s %s" % (job.jobid, status))
    else:
        rej = job.jobs.rejected or {}
        fota._say("job %s: %s refused (%s)" % (job.jobid, status, rej.get("code", "?")))


def _after_reboot(cfg, job, details):
    """A job that marked an image for a test boot, seen again after a reset."""
    want = details.get("hash", "")
    version = details.get("version", "?")
    run = fota.running_image()
    if run is not None and run[1] == want:
        if not bootutil.is_confirmed(cfg.primary, cfg.max_align):
            fota.confirm()
        _finish(job, jobs_api.SUCCEEDED, {"phase": "confirmed", "version": run[0], "hash": want})
        return _DONE
    st = mb.swap_type(cfg.primary, cfg.secondary, cfg.max_align)
    sec = mb.image_info(cfg.secondary)
    if st in (mb.SWAP_TEST, mb.SWAP_PERM) and sec is not None and hexstr(sec["hash"]) == want:
        return _RESET  # marked, but the reset has not happened yet
    running = run[0] if run is not None else "no valid image"
    _finish(
        job,
        jobs_api.FAILED,
        {
            "phase": "testing",
            "version": version,
            "hash": want,
            "reason": "reverted to %s: version %s did not confirm itself" % (running, version),
        },
    )
    return _DONE


def _install(cfg, jobs, job, spec, disconnect_mqtt):
    details = job.status_details or {}
    attempt = 1
    if job.status == jobs_api.IN_PROGRESS:
        try:
            attempt = int(details.get("attempt", "0")) + 1
        except ValueError:
            attempt = 1
    want = fota_doc.format_version(spec["version"]) if spec["version"] else None
    if attempt > MAX_ATTEMPTS:
        _finish(
            job,
            jobs_api.FAILED,
            {
                "phase": details.get("phase", "downloading"),
                "version": want,
                "reason": "gave up after %d attempts: the device restarted during each"
                % MAX_ATTEMPTS,
            },
        )
        return _DONE
    base = {"phase": "downloading", "attempt": attempt, "version": want}
    size = spec["size"]
    if size is not None:
        base["progress"] = "0/%d" % size
    if not job.update(jobs_api.IN_PROGRESS, base):
        return _DONE  # canceled or changed meanwhile: leave it
    fota._say("job %s: downloading %s" % (job.jobid, want or "an image"))

    progress = None
    if disconnect_mqtt:
        jobs.disconnect()
    else:

        def progress(received, total):
            d = dict(base)
            d["progress"] = "%d/%d" % (received, total)
            job.update(jobs_api.IN_PROGRESS, d)

    try:
        ok = fota._update(job.document, progress)
    finally:
        if disconnect_mqtt:
            jobs.reconnect()
    if not ok:
        _finish(
            job,
            jobs_api.FAILED,
            {"phase": fota._fail_phase, "version": want, "reason": fota.last_reason},
        )
        return _DONE
    v = fota._verified
    testing = {"phase": "testing", "hash": v["hash"], "version": v["version"]}
    try:
        recorded = job.update(jobs_api.IN_PROGRESS, testing)
    except jobs_api.JobsError:
        # No reply: the update may still have been applied.  Ask, so that the job and the
        # board agree before the image is marked (this raises again if the link is down).
        recorded = (
            job.describe() and job.status == jobs_api.IN_PROGRESS and job.status_details == testing
        )
    if not recorded:
        fota._say("job %s changed meanwhile: the image is not marked for boot" % job.jobid)
        return _DONE
    if not fota.test(job.document):
        _finish(
            job,
            jobs_api.FAILED,
            {"phase": "testing", "version": v["version"], "reason": fota.last_reason},
        )
        return _DONE
    return _RESET


def _handle(cfg, jobs, job, disconnect_mqtt, job_cbk):
    try:
        spec = fota._spec(job.document)
    except fota_doc.DocumentError as exc:
        _finish(job, jobs_api.REJECTED, {"reason": str(exc)})
        return _DONE
    if spec is None:
        if job_cbk is not None:
            job_cbk(job)
        else:
            _finish(
                job,
                jobs_api.REJECTED,
                {"reason": "not a firmware update job, and this device has no handler for it"},
            )
        return _DONE
    details = job.status_details or {}
    if job.status == jobs_api.IN_PROGRESS and details.get("phase") in ("testing", "confirmed"):
        return _after_reboot(cfg, job, details)
    return _install(cfg, jobs, job, spec, disconnect_mqtt)


def handle_fota_jobs(jobs, force=False, disconnect_mqtt=True, auto_reset=True, job_cbk=None):
    """mcu.fota.handle_fota_jobs(), which documents it."""
    cfg = fota._config()
    if not force and not jobs.changed():
        jobs.poll()
        if not jobs.changed():
            return False
    in_progress, queued = jobs.list()
    for job in (in_progress + queued)[:MAX_JOBS_PER_CALL]:
        if not job.describe():
            continue  # gone meanwhile (canceled, removed)
        if job.status not in (jobs_api.QUEUED, jobs_api.IN_PROGRESS):
            continue
        if _handle(cfg, jobs, job, disconnect_mqtt, job_cbk) == _RESET:
            if auto_reset:
                fota.reset()
            return True
    return False

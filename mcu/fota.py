# Firmware updates over AWS IoT Jobs, done by the microcontroller itself ("direct mode"),
# with the API of the Zerynth aws_iot_fota library:
#   update(document), test(document), confirm(), reset(),
#   handle_fota_jobs(jobs, force=False, disconnect_mqtt=True, auto_reset=True, job_cbk=None)
# on MCUboot: the image is written to the secondary slot, marked for a test swap, and the
# new firmware confirms itself after the reset, or MCUboot reverts to the old one.
#
# Configure once, before anything else:
#
#     from mcu import fota
#     fota.setup(primary_area, secondary_area,
#                requests_session=adafruit_requests.Session(pool, ssl_context),
#                reset_fn=microcontroller.reset,          # the default on CircuitPython
#                max_align=8,                             # MCUboot's BOOT_MAX_ALIGN
#                trailer_size=layout_trailer_size)        # bytes MCUboot keeps at a slot's end
#
# primary_area / secondary_area: MCUboot's slots as flash areas (mcu.flash_area: size,
# sector_size, write_size, erased_val, read, write, erase).  trailer_size: the board layout's
# Layout.trailer_size() (imgtool's --max-sectors/--align/--max-align decide it); the default
# assumes MCUBOOT_MAX_IMG_SECTORS is the primary slot's sector count.  Optional: image_num
# (0), mode ("swap-move" or "overwrite-only"; limits the image size as MCUboot does, see
# mcu.mcuboot.max_image_size),
# chunk_size (download and flash-write piece, rounded to the write block; 1024), timeout_s
# (HTTP), allow_http (False), log (a function of one string; print).
#
# The job's state across the reboot lives in the job execution itself: before the reset
# its statusDetails say {"phase": "testing", "hash": <image hash hex>, "version": V}; after
# it, handle_fota_jobs(jobs, force=True) finds that IN_PROGRESS job and compares the running
# image with that hash: the new one runs -> confirm() and SUCCEEDED; the old one runs ->
# FAILED, reason "reverted to X".  Nothing else has to survive on the device.  Reaching that
# point (network up, MQTT connected, the Jobs API answering) is the new firmware's self-test.
#
# The MD5 of the seed's documents is checked with the port's hashlib when it has MD5, else
# with mcu.md5; SHA-256 (ours) with hashlib.  A document's URL may be a presigned URL, a
# credential: it is never printed or put in a job's statusDetails.

import binascii
import hashlib

from mcu import bootutil, fota_doc
from mcu import jobs as jobs_api
from mcu import mcuboot as mb
from mcu import md5 as md5_api

MAX_ATTEMPTS = 3  # downloads of one job before it is FAILED (each reboot mid-update is one)
MAX_JOBS_PER_CALL = 20  # AWS lists at most 10 IN_PROGRESS and 10 QUEUED executions
PROGRESS_STEPS = 4  # statusDetails progress updates per download (when MQTT stays up)

last_reason = None  # why the last update() or test() returned False (one line)

_cfg = None
_verified = None  # what update() wrote and checked: {"id", "hash", "version"}
_fail_phase = "downloading"


class FotaError(Exception):
    """A programming error: setup() missing, no reset function, no HTTP session."""


class _Failure(Exception):
    """One update's failure; its text becomes the job's statusDetails.reason."""


class _Config:
    pass


def setup(
    primary_area,
    secondary_area,
    requests_session=None,
    reset_fn=None,
    max_align=8,
    trailer_size=None,
    image_num=0,
    mode="swap-move",
    chunk_size=1024,
    timeout_s=30,
    allow_http=False,
    log=None,
):
    """Configure the module (see the top of this file).  Call once at start-up."""
    global _cfg, _verified
    c = _Config()
    c.primary = primary_area
    c.secondary = secondary_area
    c.session = requests_session
    c.reset_fn = reset_fn
    c.max_align = max_align
    c.image_num = image_num
    c.timeout_s = timeout_s
    c.allow_http = allow_http
    c.log = log if log is not None else print
    ws = secondary_area.write_size
    c.chunk_size = max(ws, (chunk_size + ws - 1) // ws * ws)
    if trailer_size is None:
        sectors = primary_area.size // primary_area.sector_size
        trailer_size = mb.trailer_sz(ws, max_align, sectors)
    # MCUboot's own limit for this mode (bootutil_max_image_size).
    c.max_image_size = mb.max_image_size(
        mode,
        primary_area.size,
        secondary_area.size,
        secondary_area.sector_size,
        trailer_size,
        max_align,
    )
    _cfg = c
    _verified = None
    return c


def _config():
    if _cfg is None:
        raise FotaError("fota.setup(primary_area, secondary_area, ...) was not called")
    return _cfg


def _hex(b):
    return str(binascii.hexlify(bytes(b)), "ascii")


def _say(msg):
    _config().log("fota: " + msg)


def _new_sha256():
    if hasattr(hashlib, "sha256"):  # CPython, MicroPython
        return hashlib.sha256()
    return hashlib.new("sha256")  # CircuitPython


def _spec(document):
    """The document's firmware spec, with direct mode's own limits; None: not firmware."""
    cfg = _config()
    spec = fota_doc.parse(document, cfg.allow_http)
    if spec is None:
        return None
    if spec["signed"] is False:
        raise fota_doc.DocumentError(
            "the image is a raw binary (signed: false): direct mode installs MCUboot images "
            "only; sign it, or update through the gateway"
        )
    if spec["image"] != cfg.image_num:
        raise fota_doc.DocumentError(
            "image %d is not the image this device updates (%d)" % (spec["image"], cfg.image_num)
        )
    size = spec["size"]
    if size is not None and size > cfg.max_image_size:
        raise fota_doc.DocumentError(
            "the image (%d bytes) does not fit: the slot holds at most "
            "%d bytes" % (size, cfg.max_image_size)
        )
    return spec


# -- update: erase, download, verify ------------------------------------------------------


def _erase_slot(area):
    """Erase the whole slot, skipping sectors that already read erased (less wear)."""
    ss = area.sector_size
    blank = bytes([area.erased_val]) * ss
    for off in range(0, area.size, ss):
        if area.read(off, ss) != blank:
            try:
                area.erase(off, ss)
            except OSError as exc:  # a board's flash driver
                raise _Failure("flash erase at 0x%x failed: %s" % (off, exc))


def _write(area, off, data):
    try:
        area.write(off, data)
    except OSError as exc:
        raise _Failure("flash write at 0x%x failed: %s" % (off, exc))


def _download(cfg, spec, progress):
    session = cfg.session
    if session is None:
        raise FotaError("no HTTP session: pass requests_session to fota.setup()")
    area = cfg.secondary
    limit = spec["size"] if spec["size"] is not None else cfg.max_image_size
    chunk = cfg.chunk_size
    md5 = md5_api.new() if spec["md5"] else None
    sha = _new_sha256() if spec["sha256"] else None
    try:
        resp = session.get(spec["url"], stream=True, timeout=cfg.timeout_s)
    except Exception as exc:  # adafruit_requests raises OSError, RuntimeError, ValueError...
        raise _Failure("image download failed: %s" % _clean(exc, spec["url"]))
    done = False
    try:
        if resp.status_code != 200:
            raise _Failure("image download failed: HTTP %d" % resp.status_code)
        length = resp.headers.get("content-length")
        if length is not None and spec["size"] is not None and length != str(spec["size"]):
            raise _Failure(
                "image download: the server has %s bytes, the job says %d" % (length, spec["size"])
            )
        wbuf = bytearray(chunk)
        fill = 0
        off = 0
        received = 0
        step = max(1, limit // PROGRESS_STEPS)
        next_report = step
        pieces = resp.iter_content(chunk)
        while True:
            try:
                piece = next(pieces)
            except StopIteration:
                break
            except (OSError, RuntimeError, ValueError) as exc:  # the connection broke
                raise _Failure(
                    "image download failed after %d bytes: %s"
                    % (received, _clean(exc, spec["url"]))
                )
            n = len(piece)
            if received + n > limit:
                raise _Failure(
                    "image download: more than the %d bytes %s"
                    % (limit, "the job says" if spec["size"] is not None else "the slot holds")
                )
            if md5 is not None:
                md5.update(piece)
            if sha is not None:
                sha.update(piece)
            received += n
            mv = memoryview(piece)
            pos = 0
            while pos < n:
                take = min(chunk - fill, n - pos)
                wbuf[fill : fill + take] = mv[pos : pos + take]
                fill += take
                pos += take
                if fill == chunk:
                    _write(area, off, wbuf)
                    off += chunk
                    fill = 0
            if progress is not None and received >= next_report and received < limit:
                progress(received, limit)
                next_report = received + step
        if spec["size"] is not None and received != spec["size"]:
            raise _Failure("image download: got %d of %d bytes" % (received, spec["size"]))
        if received == 0:
            raise _Failure("image download: the server sent no bytes")
        if fill:
            ws = area.write_size
            end = (fill + ws - 1) // ws * ws
            for i in range(fill, end):
                wbuf[i] = area.erased_val
            _write(area, off, memoryview(wbuf)[:end])
        done = True
    finally:
        if not done and getattr(resp, "socket", None) is not None:
            try:
                resp.socket.close()  # do not hand a half-read connection back to the pool
            except OSError:
                pass
        resp.close()
    global _fail_phase
    _fail_phase = "verifying"
    _compare(md5, spec["md5"], "MD5")
    _compare(sha, spec["sha256"], "SHA-256")
    return received


def _compare(h, want, name):
    if h is None:
        return
    got = _hex(h.digest())  # once: MicroPython's hash objects end at digest()
    if got != want:
        raise _Failure("%s mismatch: the image is %s, the job says %s" % (name, got, want))


def _clean(exc, url):
    text = str(exc) or type(exc).__name__
    text = text.replace(url, url.split("?", 1)[0])
    return text.split("\n", 1)[0][:200]


def _hash_slot(area, n, algos):
    """Hash the first n bytes of a slot (re-checking what an earlier boot downloaded)."""
    ss = area.sector_size
    off = 0
    while off < n:
        k = min(ss, n - off)
        data = area.read(off, k)
        for h in algos:
            h.update(data)
        off += k


def _check_image(cfg, spec, received):
    """The slot must hold one valid MCUboot image, matching the document's version."""
    area = cfg.secondary
    hdr = mb.parse_header(area.read(0, mb.HEADER_SIZE))
    info = mb.image_info(area)
    if hdr is None or info is None:
        raise _Failure("not an MCUboot image (no valid header and TLVs): sign it with imgtool")
    if info["size"] > received:
        raise _Failure("the MCUboot image's TLVs end past the %d bytes downloaded" % received)
    if info["flags"] & mb.IMAGE_F_NON_BOOTABLE:
        raise _Failure("the MCUboot image is marked non-bootable")
    digest = bytes(info["hash"])
    if len(digest) == 32:
        h = _new_sha256()
        _hash_slot(area, hdr["hdr_size"] + hdr["img_size"] + hdr["protect_tlv_size"], (h,))
        if h.digest() != digest:
            raise _Failure("the image's SHA-256 TLV does not match its contents (corrupt image)")
    version = info["version"]
    want = spec["version"]
    if want is not None and tuple(want) != tuple(version):
        raise _Failure(
            "the image is version %s, the job says %s"
            % (fota_doc.format_version(version), fota_doc.format_version(want))
        )
    return {"id": fota_doc.identity(spec), "hash": _hex(digest), "version": mb.version_str(version)}


def _update(document, progress=None):
    global last_reason, _verified, _fail_phase
    cfg = _config()
    last_reason = None
    _verified = None
    _fail_phase = "downloading"
    try:
        spec = _spec(document)
        if spec is None:
            raise fota_doc.DocumentError("not a firmware update document")
        if not bootutil.is_confirmed(cfg.primary, cfg.max_align):
            raise _Failure(
                "the running image is still on trial: confirm() it before installing another"
            )
        _erase_slot(cfg.secondary)
        received = _download(cfg, spec, progress)
        _fail_phase = "verifying"
        _verified = _check_image(cfg, spec, received)
    except (_Failure, fota_doc.DocumentError) as exc:
        last_reason = str(exc)
        return False
    except OSError as exc:  # reading the slot back
        last_reason = "flash error: %s" % _clean(exc, "")
        return False
    _say("image %s verified in the secondary slot" % _verified["version"])
    return True


def update(document):
    """Download the document's firmware into the secondary slot and verify it (size,
    MD5/SHA-256, MCUboot header, hash TLV, version).  True if all went well; otherwise
    False with the reason in fota.last_reason, and nothing marked for boot."""
    return _update(document)


def test(document):
    """Mark the verified image for a test boot (MCUboot boot_set_pending); a reset must
    follow.  Re-checks the slot against the document when update() did not just do so.
    True on success; False (fota.last_reason says why) leaves nothing marked."""
    global last_reason, _verified
    cfg = _config()
    last_reason = None
    try:
        spec = _spec(document)
        if spec is None:
            raise fota_doc.DocumentError("not a firmware update document")
        if _verified is None or _verified["id"] != fota_doc.identity(spec):
            _verified = None
            size = spec["size"]
            if size is None:
                info = mb.image_info(cfg.secondary)
                size = info["size"] if info is not None else 0
            algos = []
            m = md5_api.new() if spec["md5"] else None
            s = _new_sha256() if spec["sha256"] else None
            for h in (m, s):
                if h is not None:
                    algos.append(h)
            _hash_slot(cfg.secondary, size, algos)
            try:
                _compare(m, spec["md5"], "MD5")
                _compare(s, spec["sha256"], "SHA-256")
            except _Failure:
                raise _Failure("the secondary slot does not hold the job's image: update() first")
            _verified = _check_image(cfg, spec, size)
        mb.set_pending(cfg.secondary, False, cfg.image_num, cfg.max_align)
    except (_Failure, fota_doc.DocumentError, mb.McubootError) as exc:
        last_reason = str(exc)
        return False
    _say("image %s marked for a test boot: reset to run it" % _verified["version"])
    return True


def confirm():
    """Make the running image permanent (MCUboot boot_set_confirmed).  The new firmware
    calls it after its reset; without it the next reset reverts to the old image."""
    cfg = _config()
    bootutil.confirm(cfg.primary, cfg.max_align)


def reset():
    """Reset the device: reset_fn from setup(), else microcontroller.reset() or machine.reset()."""
    fn = _config().reset_fn
    if fn is None:
        for name in ("microcontroller", "machine"):  # CircuitPython, MicroPython
            try:
                fn = getattr(__import__(name), "reset", None)
            except ImportError:
                continue
            if fn is not None:
                break
    if fn is None:
        raise FotaError("no way to reset: pass reset_fn to fota.setup()")
    return fn()


def running_image():
    """(version, hash hex) of the image that runs, or None."""
    r = bootutil.running_image(_config().primary)
    return None if r is None else (r[0], _hex(r[1]))


# -- the job flow -------------------------------------------------------------------------

_DONE = 0
_RESET = 1


def _finish(job, status, details):
    if job.update(status, details):
        _say("job %s %s" % (job.jobid, status))
    else:
        rej = job.jobs.rejected or {}
        _say("job %s: %s refused (%s)" % (job.jobid, status, rej.get("code", "?")))


def _after_reboot(cfg, job, details):
    """A job that marked an image for a test boot, seen again after a reset."""
    want = details.get("hash", "")
    version = details.get("version", "?")
    run = running_image()
    if run is not None and run[1] == want:
        if not bootutil.is_confirmed(cfg.primary, cfg.max_align):
            confirm()
        _finish(job, jobs_api.SUCCEEDED, {"phase": "confirmed", "version": run[0], "hash": want})
        return _DONE
    st = mb.swap_type(cfg.primary, cfg.secondary, cfg.max_align)
    sec = mb.image_info(cfg.secondary)
    if st in (mb.SWAP_TEST, mb.SWAP_PERM) and sec is not None and _hex(sec["hash"]) == want:
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
    _say("job %s: downloading %s" % (job.jobid, want or "an image"))

    progress = None
    if disconnect_mqtt:
        jobs.disconnect()
    else:

        def progress(received, total):
            d = dict(base)
            d["progress"] = "%d/%d" % (received, total)
            job.update(jobs_api.IN_PROGRESS, d)

    try:
        ok = _update(job.document, progress)
    finally:
        if disconnect_mqtt:
            jobs.reconnect()
    if not ok:
        _finish(
            job, jobs_api.FAILED, {"phase": _fail_phase, "version": want, "reason": last_reason}
        )
        return _DONE
    v = _verified
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
        _say("job %s changed meanwhile: the image is not marked for boot" % job.jobid)
        return _DONE
    if not test(job.document):
        _finish(
            job,
            jobs_api.FAILED,
            {"phase": "testing", "version": v["version"], "reason": last_reason},
        )
        return _DONE
    return _RESET


def _handle(cfg, jobs, job, disconnect_mqtt, job_cbk):
    try:
        spec = _spec(job.document)
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
    """Run the whole FOTA flow on this thing's pending jobs (see the top of this file).

    jobs: an mcu.jobs.Jobs.  force: look at the pending jobs now, not only after a
    notification (call it so once after connecting, then without force in the main loop,
    which also takes the notifications in).  disconnect_mqtt: close the MQTT connection for
    the download (one TLS socket at a time) and reconnect after.  auto_reset: reset() when an
    image was marked for a test boot; with False, return True and the caller resets.
    job_cbk(job): gets every job that is not a firmware update (an mcu.jobs.Job, described,
    QUEUED or IN_PROGRESS); without it such jobs are REJECTED.  Returns True when a reset
    is needed, else False.  A Jobs API that does not answer raises mcu.jobs.JobsError (and a
    broken connection the MQTT client's own errors): the job is taken up again next time.
    """
    cfg = _config()
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
                reset()
            return True
    return False

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
#
# This module holds the configuration and the API; mcu.fota_slot does the work on the
# secondary slot (erase, download, checks) and mcu.fota_jobs the job flow.

from mcu import bootutil, fota_doc, fota_slot
from mcu import mcuboot as mb
from mcu.fota_slot import UpdateFailure

last_reason = None  # why the last update() or test() returned False (one line)

_cfg = None
_verified = None  # what update() wrote and checked: {"id", "hash", "version"}
_fail_phase = "downloading"


class FotaError(Exception):
    """A programming error: setup() missing, no reset function, no HTTP session."""


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


def _say(msg):
    _config().log("fota: " + msg)


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
            raise UpdateFailure(
                "the running image is still on trial: confirm() it before installing another"
            )
        fota_slot.erase(cfg.secondary)
        if cfg.session is None:
            raise FotaError("no HTTP session: pass requests_session to fota.setup()")
        received, md5, sha = fota_slot.download(cfg, spec, progress)
        _fail_phase = "verifying"
        _verified = fota_slot.verify(cfg, spec, received, md5, sha)
    except (UpdateFailure, fota_doc.DocumentError) as exc:
        last_reason = str(exc)
        return False
    except OSError as exc:  # reading the slot back
        last_reason = "flash error: %s" % fota_slot.clean(exc, "")
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
            _verified = None  # until the slot checks out
            _verified = fota_slot.recheck(cfg, spec)
        mb.set_pending(cfg.secondary, False, cfg.image_num, cfg.max_align)
    except (UpdateFailure, fota_doc.DocumentError, mb.McubootError) as exc:
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
    return None if r is None else (r[0], fota_slot.hexstr(r[1]))


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
    # Imported here: mcu.fota_jobs builds on this module.
    from mcu import fota_jobs

    return fota_jobs.handle_fota_jobs(jobs, force, disconnect_mqtt, auto_reset, job_cbk)

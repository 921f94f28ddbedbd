# Direct mode's work on MCUboot's secondary slot, for mcu.fota: erasing it, streaming an
# image from HTTP into it in write-block pieces while hashing it (MD5 and/or SHA-256), and
# checking what it holds (the document's hashes, one valid MCUboot image, its hash TLV and
# version).  Failures raise UpdateFailure, whose text becomes the job's reason; a URL (maybe
# a presigned one, a credential) is cut at its query before it goes into any message.

import binascii
import hashlib

from mcu import fota_doc
from mcu import mcuboot as mb
from mcu import md5 as md5_api

PROGRESS_STEPS = 4  # statusDetails progress updates per download (when MQTT stays up)


class UpdateFailure(Exception):
    """One update's failure; its text becomes the job's statusDetails.reason."""


def hexstr(b):
    return str(binascii.hexlify(bytes(b)), "ascii")


def new_sha256():
    if hasattr(hashlib, "sha256"):  # CPython, MicroPython
        return hashlib.sha256()
    return hashlib.new("sha256")  # CircuitPython


def clean(exc, url):
    """An exception's text in one line, without the URL's query."""
    text = str(exc) or type(exc).__name__
    text = text.replace(url, url.split("?", 1)[0])
    return text.split("\n", 1)[0][:200]


def erase(area):
    """Erase the whole slot, skipping sectors that already read erased (less wear)."""
    ss = area.sector_size
    blank = bytes([area.erased_val]) * ss
    for off in range(0, area.size, ss):
        if area.read(off, ss) != blank:
            try:
                area.erase(off, ss)
            except OSError as exc:  # a board's flash driver
                raise UpdateFailure("flash erase at 0x%x failed: %s" % (off, exc))


def _write(area, off, data):
    try:
        area.write(off, data)
    except OSError as exc:
        raise UpdateFailure("flash write at 0x%x failed: %s" % (off, exc))


def download(cfg, spec, progress):
    """Stream spec["url"] into the (erased) secondary slot with cfg.session.

    Returns (bytes received, MD5 object or None, SHA-256 object or None): the hashes of
    what came, for verify().  progress(received, limit), if given, is called PROGRESS_STEPS
    times or so along the way."""
    session = cfg.session
    area = cfg.secondary
    limit = spec["size"] if spec["size"] is not None else cfg.max_image_size
    chunk = cfg.chunk_size
    md5 = md5_api.new() if spec["md5"] else None
    sha = new_sha256() if spec["sha256"] else None
    try:
        resp = session.get(spec["url"], stream=True, timeout=cfg.timeout_s)
    except Exception as exc:  # adafruit_requests raises OSError, RuntimeError, ValueError...
        raise UpdateFailure("image download failed: %s" % clean(exc, spec["url"]))
    done = False
    try:
        if resp.status_code != 200:
            raise UpdateFailure("image download failed: HTTP %d" % resp.status_code)
        length = resp.headers.get("content-length")
        if length is not None and spec["size"] is not None and length != str(spec["size"]):
            raise UpdateFailure(
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
                raise UpdateFailure(
                    "image download failed after %d bytes: %s" % (received, clean(exc, spec["url"]))
                )
            n = len(piece)
            if received + n > limit:
                raise UpdateFailure(
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
            raise UpdateFailure("image download: got %d of %d bytes" % (received, spec["size"]))
        if received == 0:
            raise UpdateFailure("image download: the server sent no bytes")
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
    return received, md5, sha


def _compare(h, want, name):
    if h is None:
        return
    got = hexstr(h.digest())  # once: MicroPython's hash objects end at digest()
    if got != want:
        raise UpdateFailure("%s mismatch: the image is %s, the job says %s" % (name, got, want))


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


def check_image(cfg, spec, received):
    """The slot must hold one valid MCUboot image, matching the document's version.

    Returns what was verified: {"id": the document's identity, "hash": the image hash in
    hex, "version": "1.2.3+4"}."""
    area = cfg.secondary
    hdr = mb.parse_header(area.read(0, mb.HEADER_SIZE))
    info = mb.image_info(area)
    if hdr is None or info is None:
        raise UpdateFailure("not an MCUboot image (no valid header and TLVs): sign it with imgtool")
    if info["size"] > received:
        raise UpdateFailure("the MCUboot image's TLVs end past the %d bytes downloaded" % received)
    if info["flags"] & mb.IMAGE_F_NON_BOOTABLE:
        raise UpdateFailure("the MCUboot image is marked non-bootable")
    digest = bytes(info["hash"])
    if len(digest) == 32:
        h = new_sha256()
        _hash_slot(area, hdr["hdr_size"] + hdr["img_size"] + hdr["protect_tlv_size"], (h,))
        if h.digest() != digest:
            raise UpdateFailure(
                "the image's SHA-256 TLV does not match its contents (corrupt image)"
            )
    version = info["version"]
    want = spec["version"]
    if want is not None and tuple(want) != tuple(version):
        raise UpdateFailure(
            "the image is version %s, the job says %s"
            % (fota_doc.format_version(version), fota_doc.format_version(want))
        )
    return {
        "id": fota_doc.identity(spec),
        "hash": hexstr(digest),
        "version": mb.version_str(version),
    }


def verify(cfg, spec, received, md5, sha):
    """After download(): the document's MD5 / SHA-256, then check_image()."""
    _compare(md5, spec["md5"], "MD5")
    _compare(sha, spec["sha256"], "SHA-256")
    return check_image(cfg, spec, received)


def recheck(cfg, spec):
    """The slot against the document when no download just wrote it (an earlier update()
    or boot): its MD5 / SHA-256 read back, then check_image()."""
    size = spec["size"]
    if size is None:
        info = mb.image_info(cfg.secondary)
        size = info["size"] if info is not None else 0
    algos = []
    m = md5_api.new() if spec["md5"] else None
    s = new_sha256() if spec["sha256"] else None
    for h in (m, s):
        if h is not None:
            algos.append(h)
    _hash_slot(cfg.secondary, size, algos)
    try:
        _compare(m, spec["md5"], "MD5")
        _compare(s, spec["sha256"], "SHA-256")
    except UpdateFailure:
        raise UpdateFailure("the secondary slot does not hold the job's image: update() first")
    return check_image(cfg, spec, size)

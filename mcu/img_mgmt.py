# SMP image management group (1): state read/write, upload, erase, slot info.
# Behaviour follows Zephyr's img_mgmt (img_mgmt.c, img_mgmt_state.c, zephyr_img_mgmt.c)
# for a single updatable image with a primary (running) and a secondary slot.
# Runs on the MCU.

import hashlib

from mcu import mcuboot as mb
from mcu import smp_header as sh
from mcu.smp_server import GroupError, SmpError, field

try:
    from typing import Any, Dict, List, Optional  # noqa: F401 - type comments
except ImportError:
    pass

GROUP = 1

# Image group error codes (img_mgmt.h).
ERR_UNKNOWN = 1
ERR_NO_IMAGE = 3
ERR_NO_FREE_SLOT = 9
ERR_FLASH_WRITE_FAILED = 12
ERR_FLASH_ERASE_FAILED = 13
ERR_INVALID_SLOT = 14
ERR_INVALID_OFFSET = 20
ERR_INVALID_LENGTH = 21
ERR_INVALID_IMAGE_HEADER = 22
ERR_INVALID_IMAGE_HEADER_MAGIC = 23
ERR_INVALID_HASH = 24
ERR_HASH_NOT_FOUND = 8
ERR_VERSION_GET_FAILED = 26
ERR_CURRENT_VERSION_IS_NEWER = 27
ERR_IMAGE_ALREADY_PENDING = 28
ERR_INVALID_IMAGE_VECTOR_TABLE = 29
ERR_INVALID_IMAGE_TOO_LARGE = 30
ERR_INVALID_IMAGE_DATA_OVERRUN = 31
ERR_IMAGE_SETTING_TEST_TO_ACTIVE_DENIED = 33

# Next-boot types (img_mgmt_get_next_boot_slot).
NEXT_NORMAL = 0
NEXT_TEST = 1
NEXT_REVERT = 2


def translate(rc: int) -> int:
    """Legacy SMPv1 rc for an image group error (img_mgmt_translate_error_code)."""
    if rc in (ERR_NO_IMAGE, 4):
        return sh.RC_ENOENT
    if rc in (ERR_NO_FREE_SLOT, ERR_CURRENT_VERSION_IS_NEWER, ERR_IMAGE_ALREADY_PENDING):
        return sh.RC_EBADSTATE
    if rc == 15:
        return sh.RC_ENOMEM
    if rc in (
        ERR_INVALID_SLOT,
        19,
        ERR_INVALID_OFFSET,
        ERR_INVALID_LENGTH,
        ERR_INVALID_IMAGE_HEADER,
        ERR_INVALID_HASH,
        25,
    ):
        return sh.RC_EINVAL
    return sh.RC_EUNKNOWN


class Upload:
    """One upload session: where it writes, how far it got, and a write-block tail."""

    def __init__(self, size: int, sha: bytes, write_size: int) -> None:
        self.size = size
        self.sha = sha
        self.off = 0  # bytes received and accepted
        self.flushed = 0  # bytes programmed into flash (a multiple of the write block)
        self.tail = bytearray()  # received, not yet a whole write block
        self.write_size = write_size


class ImageGroup:
    """The image group of an SMP server over two flash areas (primary, secondary)."""

    def __init__(
        self,
        primary: "Any",
        secondary: "Any",
        max_align: int = 8,
        trailer_size: int = 0,
        mode: str = "swap-move",
        allow_erase_pending: bool = True,
    ) -> None:
        self.primary = primary
        # CONFIG_MCUMGR_GRP_IMG_ALLOW_ERASE_PENDING: a slot pending for its next boot (not
        # a revert slot) may be erased or uploaded over, so a host can take back an image
        # whose reset never arrived.  Our Zephyr app configuration enables it too.
        self.allow_erase_pending = allow_erase_pending
        self.secondary = secondary
        self.max_align = max_align
        self.mode = mode
        ss = secondary.sector_size
        self.trailer_bytes = (trailer_size + ss - 1) // ss * ss
        # Room for the image: MCUboot's own limit for this mode (bootutil_max_image_size).
        self.max_image_size = mb.max_image_size(
            mode, primary.size, secondary.size, ss, trailer_size, max_align
        )
        self.upload = None  # type: Optional[Upload]

    def register(self, server: "Any") -> None:
        server.register(GROUP, 0, self.h_state)
        server.register(GROUP, 1, self.h_upload)
        server.register(GROUP, 5, self.h_erase)
        server.register(GROUP, 6, self.h_slot_info)
        server.set_translator(GROUP, translate)

    # -- slot state --------------------------------------------------------------------
    def _area(self, slot: int) -> "Any":
        return self.primary if slot == 0 else self.secondary

    def next_boot(self) -> "Any":
        """(slot, type) of the next boot, from MCUboot's swap type (active slot is 0)."""
        st = mb.swap_type(self.primary, self.secondary, self.max_align)
        if st == mb.SWAP_NONE:
            return 0, NEXT_NORMAL
        if st == mb.SWAP_PERM:
            return 1, NEXT_NORMAL
        if st == mb.SWAP_REVERT:
            return 1, NEXT_REVERT
        return 1, NEXT_TEST

    def images(self) -> "List[Dict[str, Any]]":
        nbs, kind = self.next_boot()
        flags = [{"active": True, "confirmed": kind != NEXT_REVERT}, {}]
        if nbs != 0:
            if kind == NEXT_NORMAL:
                flags[1] = {"pending": True, "permanent": True}
            elif kind == NEXT_REVERT:
                flags[1] = {"confirmed": True}
            else:
                flags[1] = {"pending": True}
        out = []
        for slot in (0, 1):
            info = mb.image_info(self._area(slot))
            if info is None:
                continue
            f = flags[slot]
            out.append(
                {
                    "image": 0,
                    "slot": slot,
                    "version": mb.version_str(info["version"]),
                    "hash": bytes(info["hash"]),
                    "bootable": not (info["flags"] & mb.IMAGE_F_NON_BOOTABLE),
                    "pending": f.get("pending", False),
                    "confirmed": f.get("confirmed", False),
                    "active": f.get("active", False),
                    "permanent": f.get("permanent", False),
                }
            )
        return out

    def state_map(self) -> "Dict[str, Any]":
        return {"images": self.images(), "splitStatus": 0}

    def h_state(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        if op == sh.OP_READ:
            return self.state_map()
        h = field(req, "hash", bytes)
        confirm = field(req, "confirm", bool, False)
        if h is None or len(h) == 0:
            if not confirm:
                raise GroupError(GROUP, ERR_INVALID_HASH)
            slot = 0
        elif len(h) != 32:
            raise GroupError(GROUP, ERR_INVALID_HASH)
        else:
            slot = self._find_by_hash(bytes(h))
            if slot < 0:
                raise GroupError(GROUP, ERR_HASH_NOT_FOUND)
        self._set_next_boot_slot(slot, confirm)
        return self.state_map()

    def _find_by_hash(self, h: bytes) -> int:
        for slot in (0, 1):
            info = mb.image_info(self._area(slot))
            if info is not None and bytes(info["hash"]) == h:
                return slot
        return -1

    def _set_next_boot_slot(self, slot: int, confirm: bool) -> None:
        """img_mgmt_set_next_boot_slot: the test/confirm rules, then boot_set_next."""
        nbs, kind = self.next_boot()
        if not confirm and slot == 0:
            raise GroupError(GROUP, ERR_IMAGE_SETTING_TEST_TO_ACTIVE_DENIED)
        if kind == NEXT_TEST:
            if not confirm and slot == nbs:
                return
            raise GroupError(GROUP, ERR_IMAGE_ALREADY_PENDING)
        if kind == NEXT_NORMAL:
            if confirm and slot == nbs:
                return
            if (slot == 0 and nbs != 0) or (not confirm and slot != 0 and slot == nbs):
                raise GroupError(GROUP, ERR_IMAGE_ALREADY_PENDING)
        if kind == NEXT_REVERT:
            if confirm and slot == nbs:
                return
            if not confirm:
                raise GroupError(GROUP, ERR_IMAGE_ALREADY_PENDING)
        area = self._area(slot)
        try:
            mb.set_next(area, slot == 0, confirm, 0, self.max_align)
        except mb.McubootError:
            if slot == 0:
                raise GroupError(GROUP, ERR_INVALID_IMAGE_VECTOR_TABLE)
            # boot_set_next erases a secondary slot with a corrupt trailer, so that a
            # later upload can be scheduled.
            self.upload = None
            try:
                for off in range(0, area.size, area.sector_size):
                    area.erase(off, area.sector_size)
            except Exception:
                pass
            raise GroupError(GROUP, ERR_INVALID_IMAGE_HEADER_MAGIC)
        except Exception:
            raise GroupError(GROUP, ERR_FLASH_WRITE_FAILED)

    def secondary_in_use(self) -> bool:
        """img_mgmt_slot_in_use(1): needed for a revert; also pending for test or scheduled
        unless erasing pending slots is allowed."""
        nbs, kind = self.next_boot()
        if nbs != 1:
            return False
        return kind == NEXT_REVERT or not self.allow_erase_pending

    # -- upload --------------------------------------------------------------------------
    def h_upload(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        if op != sh.OP_WRITE:
            raise SmpError(sh.RC_ENOTSUP)
        off = field(req, "off", int)
        data = field(req, "data", bytes, b"")
        try:
            if off is None:
                raise GroupError(GROUP, ERR_INVALID_OFFSET)
            if off == 0:
                return self._first_chunk(req, data)
            up = self.upload
            if up is None or off != up.off:
                # Dropped, answered with the offset expected: the resume/pipelining cue.
                return {"off": up.off if up is not None else 0}
            return self._write_chunk(up, data)
        except Exception:
            # Any upload error ends the session (img_mgmt_reset_upload), flash errors and
            # unexpected ones included: the next chunk is told to start over from 0.
            self.upload = None
            raise

    def _first_chunk(self, req: "Dict[str, Any]", data: "Any") -> "Any":
        # Checked in img_mgmt_upload_inspect's order.  `image` is read and ignored: with one
        # updatable image Zephyr always uploads to the unused slot of image 0.
        size = field(req, "len", int)
        sha = field(req, "sha", bytes, b"")
        field(req, "image", int, 0)
        upgrade = field(req, "upgrade", bool, False)
        if len(data) < mb.HEADER_SIZE:
            raise GroupError(GROUP, ERR_INVALID_IMAGE_HEADER)
        if size is None:
            raise GroupError(GROUP, ERR_INVALID_LENGTH)
        hdr = mb.parse_header(bytes(data[0 : mb.HEADER_SIZE]))
        if hdr is None:
            raise GroupError(GROUP, ERR_INVALID_IMAGE_HEADER_MAGIC)
        if len(sha) > 32:
            raise GroupError(GROUP, ERR_INVALID_HASH)
        sha = bytes(sha)
        up = self.upload
        if up is not None and sha and up.sha == sha:
            return {"off": up.off}  # resume the interrupted session
        if self.secondary_in_use():
            raise GroupError(GROUP, ERR_NO_FREE_SLOT)
        if size > self.max_image_size:
            raise GroupError(GROUP, ERR_INVALID_IMAGE_TOO_LARGE)
        if upgrade:
            cur = mb.image_info(self.primary)
            if cur is None:
                raise GroupError(GROUP, ERR_VERSION_GET_FAILED)
            if tuple(hdr["version"][0:3]) <= tuple(cur["version"][0:3]):
                raise GroupError(GROUP, ERR_CURRENT_VERSION_IS_NEWER)
        self.upload = None
        if len(sha) == 32 and self._slot_hash(size) == sha:
            # CONFIG_IMG_ENABLE_IMAGE_CHECK: the slot already holds this image.
            return {"off": size, "match": True}
        up = self._recover(size, sha, data)
        if up is not None:
            self.upload = up
            return {"off": up.off}
        self._erase_for(size)
        up = Upload(size, sha, self.secondary.write_size)
        self.upload = up
        return self._write_chunk(up, data)

    def _recover(self, size: int, sha: bytes, first: "Any") -> "Optional[Upload]":
        """Pick up an upload that a reset cut short, from what reached the flash.

        An extension of Zephyr's behaviour (which starts over after a reset): if the slot
        starts with this request's first chunk and its trailer is untouched, the upload
        resumes after the last programmed write block.  The image hash the host sends
        (``sha``) is checked when the upload completes, so a wrong guess is caught there.
        """
        a = self.secondary
        if len(sha) != 32 or len(first) < mb.HEADER_SIZE or size <= len(first):
            return None
        if mb.read_swap_state(a, self.max_align).magic != mb.MAGIC_UNSET:
            return None
        if a.read(0, len(first)) != bytes(first):
            return None
        ws = a.write_size
        ev = a.erased_val
        end = min((size + ws - 1) // ws * ws, a.size)
        pos = end
        step = 256
        while pos > 0:
            start = max(0, pos - step)
            block = a.read(start, pos - start)
            i = len(block) - 1
            while i >= 0 and block[i] == ev:
                i -= 1
            if i >= 0:
                pos = start + i + 1
                break
            pos = start
        resume = (pos + ws - 1) // ws * ws
        if resume <= len(first) or resume >= size:
            return None
        up = Upload(size, sha, ws)
        up.off = up.flushed = resume
        return up

    def _erase_for(self, size: int) -> None:
        """Erase the sectors the image needs and the trailer's sectors (img_mgmt_erase)."""
        a = self.secondary
        ss = a.sector_size
        end = min((size + ss - 1) // ss * ss, a.size)
        try:
            for off in range(0, end, ss):
                a.erase(off, ss)
            for off in range(max(end, a.size - self.trailer_bytes), a.size, ss):
                a.erase(off, ss)
        except Exception:
            raise GroupError(GROUP, ERR_FLASH_ERASE_FAILED)

    def _write_chunk(self, up: "Upload", data: "Any") -> "Any":
        n = len(data)
        if up.off + n > up.size:
            raise GroupError(GROUP, ERR_INVALID_IMAGE_DATA_OVERRUN)
        ws = up.write_size
        try:
            if up.tail:
                need = ws - len(up.tail)
                take = need if need < n else n
                up.tail.extend(data[0:take])
                start = take
                if len(up.tail) == ws:
                    self.secondary.write(up.flushed, up.tail)
                    up.flushed += ws
                    up.tail = bytearray()
            else:
                start = 0
            whole = (n - start) // ws * ws
            if whole:
                self.secondary.write(up.flushed, data[start : start + whole])
                up.flushed += whole
            if start + whole < n:
                up.tail.extend(data[start + whole : n])
            up.off += n
            if up.off == up.size and up.tail:
                pad = bytes([self.secondary.erased_val]) * (ws - len(up.tail))
                self.secondary.write(up.flushed, bytes(up.tail) + bytes(pad))
                up.flushed += ws
                up.tail = bytearray()
        except Exception:
            self.upload = None
            raise GroupError(GROUP, ERR_FLASH_WRITE_FAILED)
        rsp = {"off": up.off}
        if up.off == up.size:
            self.upload = None  # complete: the session ends (Zephyr resets it)
            if up.sha:
                rsp["match"] = self._slot_hash(up.size)[0 : len(up.sha)] == up.sha
        return rsp

    def _slot_hash(self, size: int) -> bytes:
        """SHA-256 of the first ``size`` bytes of the secondary slot."""
        h = hashlib.sha256()
        pos = 0
        size = min(size, self.secondary.size)
        while pos < size:
            n = min(4096, size - pos)
            h.update(self.secondary.read(pos, n))
            pos += n
        return h.digest()

    # -- erase and slot info -------------------------------------------------------------
    def h_erase(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        if op != sh.OP_WRITE:
            raise SmpError(sh.RC_ENOTSUP)
        # img_mgmt_erase: a slot holding a valid image may not be erased while in use (the
        # active slot; the other one while pending, scheduled or needed for a revert).
        # The running image's slot is always in use.
        slot = field(req, "slot", int, 1)
        if slot > 1:
            raise GroupError(GROUP, ERR_INVALID_SLOT)
        if slot == 0 or (self.secondary_in_use() and mb.image_info(self.secondary) is not None):
            raise GroupError(GROUP, ERR_NO_FREE_SLOT)
        a = self.secondary
        self.upload = None  # no stale offset after an erase (zephyr#51798)
        try:
            for off in range(0, a.size, a.sector_size):
                a.erase(off, a.sector_size)
        except Exception:
            raise GroupError(GROUP, ERR_FLASH_ERASE_FAILED)
        return {}

    def h_slot_info(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        if op != sh.OP_READ:
            raise SmpError(sh.RC_ENOTSUP)
        return {
            "images": [
                {
                    "image": 0,
                    "slots": [
                        {"slot": 0, "size": self.primary.size},
                        {"slot": 1, "size": self.secondary.size, "upload_image_id": 0},
                    ],
                    "max_image_size": self.max_image_size,
                }
            ]
        }

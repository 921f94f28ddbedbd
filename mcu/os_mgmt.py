# SMP OS management group (0): echo, reset, mcumgr params, bootloader info.
# Behaviour follows Zephyr's os_mgmt.c.  Runs on the MCU.

from mcu import smp_header as sh
from mcu.smp_server import GroupError, SmpError, field

try:
    from typing import Any, Callable, Dict
except ImportError:
    pass

GROUP = 0
ERR_INVALID_FORMAT = 2  # OS_MGMT_ERR_INVALID_FORMAT
ERR_QUERY_YIELDS_NO_ANSWER = 3  # OS_MGMT_ERR_QUERY_YIELDS_NO_ANSWER
ERR_RTC_NOT_SET = 4  # OS_MGMT_ERR_RTC_NOT_SET

# enum mcuboot_mode (bootutil/boot_status.h)
MCUBOOT_MODES = {"overwrite-only": 2, "swap-move": 3, "swap-scratch": 1, "swap-offset": 9}


def translate(rc: int) -> int:
    """Legacy SMPv1 rc for an OS group error (os_mgmt_translate_error_code)."""
    if rc == ERR_INVALID_FORMAT:
        return sh.RC_EINVAL
    if rc in (ERR_QUERY_YIELDS_NO_ANSWER, ERR_RTC_NOT_SET):
        return sh.RC_ENOENT
    return sh.RC_EUNKNOWN


class OsGroup:
    """OS group handlers; ``reset`` is called after the reset reply has been sent."""

    def __init__(self, reset: "Callable[[], None]", mode: str = "swap-move") -> None:
        self.reset = reset
        self.mode = MCUBOOT_MODES.get(mode, 3)

    def register(self, server: "Any") -> None:
        server.register(GROUP, sh.OS_ECHO, self.h_echo)
        server.register(GROUP, sh.OS_RESET, self.h_reset)
        server.register(GROUP, sh.OS_MCUMGR_PARAMS, self.h_params)
        server.register(GROUP, sh.OS_BOOTLOADER_INFO, self.h_bootloader_info)
        server.set_translator(GROUP, translate)

    def h_echo(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        d = field(req, "d", str)
        if d is None:
            raise SmpError(sh.RC_EINVAL)
        return {"r": d}

    def h_reset(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        if op != sh.OP_WRITE:
            raise SmpError(sh.RC_ENOTSUP)
        # Zephyr ignores a "force" (or "boot_mode") it cannot decode: a core command
        # must not be refused over its optional fields.
        server.after_reply = self.reset
        return {}

    def h_params(self, server: "Any", op: int, version: int, req: "Dict[str, Any]") -> "Any":
        if op != sh.OP_READ:
            raise SmpError(sh.RC_ENOTSUP)
        return {"buf_size": server.buf_size, "buf_count": server.buf_count}

    def h_bootloader_info(
        self, server: "Any", op: int, version: int, req: "Dict[str, Any]"
    ) -> "Any":
        if op != sh.OP_READ:
            raise SmpError(sh.RC_ENOTSUP)
        query = field(req, "query", str)
        if query is None:
            return {"bootloader": "MCUboot"}
        if query == "mode":
            return {"mode": self.mode, "no-downgrade": False}
        raise GroupError(GROUP, ERR_QUERY_YIELDS_NO_ANSWER)

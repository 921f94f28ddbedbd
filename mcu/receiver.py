# The receiver's main loop: serial bytes in, SMP requests dispatched, framed replies out.
# Runs on the MCU.  ``port`` is anything with read(n) -> bytes|None and write(data)
# (busio.UART, usb_cdc.data, or a host adapter).  The UART's receive buffer is the
# receive window: while one request is handled, the next ones queue up in it, which is
# what the advertised buf_count promises the host.

from mcu import smp_frame as sf
from mcu.img_mgmt import ImageGroup
from mcu.os_mgmt import OsGroup
from mcu.smp_server import SmpServer

try:
    from typing import Any, Callable, Optional
except ImportError:
    pass

READ_SIZE = 512


class Receiver:
    def __init__(
        self,
        port: "Any",
        server: "Any",
        framing: str = "console",
        clock: "Optional[Callable[[], int]]" = None,
        raw_timeout_ms: int = 3000,
    ) -> None:
        self.port = port
        self.server = server
        self.framing = framing
        if framing == "raw":
            self.decoder = sf.RawDecoder(server.buf_size, raw_timeout_ms, clock)
        elif framing == "console":
            # Zephyr decodes a console packet's 2-byte length, the packet and its CRC into
            # one buf_size netbuf, so the largest packet is buf_size - 4 (smpclient sizes
            # its requests to exactly that).  Raw packets have the whole netbuf.
            self.decoder = sf.ConsoleDecoder(server.buf_size - 4)
        else:
            raise ValueError("framing must be 'console' or 'raw'")
        self.requests = 0

    def poll(self) -> bool:
        """Handle whatever input is waiting; True if any byte was read."""
        data = self.port.read(READ_SIZE)
        if not data:
            if self.framing == "raw":
                self.decoder.feed(b"")  # lets an idle gap drop a partial packet
            return False
        for packet in self.decoder.feed(data):
            self.requests += 1
            rsp = self.server.handle(packet)
            if rsp is None:
                continue
            if self.framing == "console":
                self.port.write(sf.encode_console(rsp))
            else:
                self.port.write(rsp)
            action = self.server.after_reply
            if action is not None:
                self.server.after_reply = None
                action()
        return True


def make_server(
    primary: "Any",
    secondary: "Any",
    reset: "Callable[[], None]",
    max_align: int = 8,
    trailer_size: int = 0,
    mode: str = "swap-move",
    buf_size: int = 2048,
    buf_count: int = 4,
    allow_erase_pending: bool = True,
) -> "Any":
    """An SMP server with the OS and image groups over the two MCUboot slots."""
    server = SmpServer(buf_size, buf_count)
    OsGroup(reset, mode).register(server)
    ImageGroup(primary, secondary, max_align, trailer_size, mode, allow_erase_pending).register(
        server
    )
    return server

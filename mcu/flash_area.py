# Flash-area backends for the receiver.  A flash area is any object with:
#   size, sector_size, write_size, erased_val,
#   read(off, n) -> bytes, write(off, data), erase(off, n)
# with NOR rules: erase whole sectors; write whole, aligned, erased write blocks.
#
# - RamArea: an in-memory NOR area with those rules, for tests on the MCU interpreter
#   (on the host, bootloader.sim.flash.FlashArea is the simulator backend, file-backed).
# - BlockDeviceArea: real boards.  It wraps MicroPython's extended block-device protocol
#   (readblocks(block, buf, offset), writeblocks(block, buf, offset), ioctl(6, block) to
#   erase), which rp2.Flash() and esp32.Partition implement; the partition must be the
#   MCUboot slot as laid out in bootloader/boards/<board>.toml.  On CircuitPython, where no
#   raw-flash API exists, a board port exposes the same four methods from C.


class FlashAreaError(Exception):
    pass


class RamArea:
    """A NOR flash area in RAM (for tests and for the MicroPython test harness)."""

    def __init__(self, size, sector_size, write_size, erased_val=0xFF):
        self.size = size
        self.sector_size = sector_size
        self.write_size = write_size
        self.erased_val = erased_val
        self.mem = bytearray(bytes([erased_val]) * size)  # MicroPython: no bytearray * int
        self.ops = 0

    def read(self, off, n):
        if off < 0 or n < 0 or off + n > self.size:
            raise FlashAreaError("read out of range")
        return bytes(self.mem[off : off + n])

    def write(self, off, data):
        n = len(data)
        if off % self.write_size or n % self.write_size or off < 0 or off + n > self.size:
            raise FlashAreaError("misaligned write")
        ev = self.erased_val
        mem = self.mem
        for i in range(off, off + n):
            if mem[i] != ev:
                raise FlashAreaError("write to non-erased flash")
        mem[off : off + n] = data
        self.ops += 1

    def erase(self, off, n):
        if off % self.sector_size or n % self.sector_size or off < 0 or off + n > self.size:
            raise FlashAreaError("misaligned erase")
        self.mem[off : off + n] = bytes([self.erased_val]) * n
        self.ops += n // self.sector_size


class BlockDeviceArea:
    """A slot on a MicroPython-style block device (rp2.Flash, esp32.Partition)."""

    IOCTL_BLOCK_SIZE = 5
    IOCTL_BLOCK_ERASE = 6

    def __init__(self, bdev, offset, size, write_size=4, erased_val=0xFF):
        self.bdev = bdev
        self.block = bdev.ioctl(self.IOCTL_BLOCK_SIZE, 0)
        if offset % self.block or size % self.block:
            raise FlashAreaError("slot not aligned to the device's erase block")
        self.base = offset // self.block
        self.size = size
        self.sector_size = self.block
        self.write_size = write_size
        self.erased_val = erased_val

    def read(self, off, n):
        buf = bytearray(n)
        self.bdev.readblocks(self.base + off // self.block, buf, off % self.block)
        return bytes(buf)

    def write(self, off, data):
        self.bdev.writeblocks(self.base + off // self.block, data, off % self.block)

    def erase(self, off, n):
        for b in range(off // self.block, (off + n) // self.block):
            self.bdev.ioctl(self.IOCTL_BLOCK_ERASE, self.base + b)

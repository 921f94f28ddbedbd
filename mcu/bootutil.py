# The running firmware's confirm-on-boot API (what Zephyr apps get from
# boot_write_img_confirmed() and friends).  Runs on the MCU.
#
#     from mcu import bootutil
#     if self_test_passed():
#         bootutil.confirm(primary_area)        # make this image permanent
#     # without confirm(), the next reset reverts to the previous image

from mcu import mcuboot as mb


def confirm(primary, max_align=8):
    """Mark the running image OK (boot_set_confirmed); a no-op if it already is."""
    mb.set_confirmed(primary, max_align)


def is_confirmed(primary, max_align=8):
    """False only while the running image is on trial (the next reset would revert it)."""
    st = mb.read_swap_state(primary, max_align)
    return not (st.magic == mb.MAGIC_GOOD and st.image_ok == mb.FLAG_UNSET)


def running_image(primary):
    """(version string, hash bytes) of the image in the primary slot, or None."""
    info = mb.image_info(primary)
    if info is None:
        return None
    return mb.version_str(info["version"]), bytes(info["hash"])

"""``from aws.iot import fota``: the seed's FOTA module is mcu.fota (same API)."""

from mcu.fota import confirm, handle_fota_jobs, reset, test, update

__all__ = ["confirm", "handle_fota_jobs", "reset", "test", "update"]

"""Reliability campaigns: the whole flow under faults, with its safety invariants checked.

    python -m reliability [--quick] [--only NAME ...]      -> RELIABILITY.md at the repo root

Campaigns (one module each):

- ``link``: updates through ``tools.faultlink`` (corrupted, dropped bytes, blackouts)
  between the bridge's device flow and ``fota-vmcu``, against a fault-free run;
- ``powerloss``: power lost before every flash operation of the whole device flow
  (upload, test mark, swap, confirm, revert), in-process on the tiny board;
- ``crashes``: the virtual MCU killed mid-upload, and the bridge daemon killed at random
  points of a job on the full local stack;
- ``infra``: the MQTT broker restarted mid-job, the HTTPS connection dropped mid-download
  (Range resume), a presigned URL expiring mid-download (refresh).

Each campaign returns a :class:`~reliability.common.CampaignResult`: figures for the report
and ``violations``, the broken safety invariants (an empty list is a pass).  Timing is
reported, never asserted.
"""

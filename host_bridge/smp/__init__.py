"""SMP (mcumgr) client over a serial line: framing, requests, the windowed upload."""

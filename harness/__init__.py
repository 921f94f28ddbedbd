"""The harness shared by tests/, reliability/, bench/ and tools/: child processes with
bounded waits, free ports on 127.0.0.1, a real mosquitto broker, the local jobs service, the
bridge as a process, virtual MCUs on pseudo-terminals.

    procs.py      Proc/Procs (a child with its log, waits on what it prints), free_port,
                  port_open, find_mosquitto, the fota-vmcu command line, wait_until
    mosquitto.py  Mosquitto: a broker on free ports (plain and TLS), its test PKI, restarts
    vmcu.py       Vmcu: fota-vmcu as a process on a pty, its flash file and log
    bridge.py     LocalJobs (the local jobs service in-process, its HTTPS file server),
                  BridgeProcess (``fota-bridge run`` as a process), UpdateSpy, write_config

reliability/stack.py composes the same pieces as separate processes, for campaigns that
kill and restart them.
"""

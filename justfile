# fota-bridge: AWS IoT Jobs -> MCUboot over SMP.  `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
py := venv / "bin" / "python"
python := env_var_or_default("PYTHON", "python3")

default:
    @just --list

# Create or refresh the virtual environment (re-installs when pyproject.toml changes).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{py}}" ]; then {{python}} -m venv "{{venv}}"; fi
    stamp="{{venv}}/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        "{{py}}" -m pip install -q --upgrade pip
        "{{py}}" -m pip install -q -e '.[test]'
        rm -f "{{venv}}"/.installed-*; touch "$stamp"
    fi

# Run the whole test suite.
test *ARGS: setup
    "{{py}}" -m pytest -q {{ARGS}}

# ruff and mypy (strict for host code).
lint: setup
    "{{venv}}/bin/ruff" check .
    "{{venv}}/bin/ruff" format --check fota_common host_bridge bootloader localjobs mcu harness tests bench tools reliability
    "{{venv}}/bin/mypy"

# Regenerate the Zephyr devicetree overlays from the board layouts.
overlays: setup
    "{{py}}" -m bootloader.overlay --write

# Benchmarks (results in bench/results.md).
bench: setup
    "{{py}}" bench/run.py

# Power-cut campaigns on the MCUboot model (prints a table).
powercut: setup
    "{{py}}" -m bootloader.sim.powercut

# Check that the committed Zephyr overlays match the board layouts.
overlays-check: setup
    "{{py}}" -m bootloader.overlay --check

# Compile mcu/*.py into build/mcu-bundle/lib/mcu/*.mpy for a board's CIRCUITPY/lib (README "Direct mode").
mcu-bundle *ARGS: setup
    "{{py}}" -m tools.mcu_bundle {{ARGS}}

# The whole system on one machine: mosquitto, the local jobs service, two virtual MCUs, the bridge.
demo: setup
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
            echo "demo: installing mosquitto with apt-get"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
        else
            echo "demo: mosquitto is missing: run 'sudo apt-get install mosquitto' and try again" >&2
            exit 1
        fi
    fi
    "{{py}}" -m tools.demo

# Reliability campaigns (faulty line, power loss, crashes, infrastructure faults); writes RELIABILITY.md.
reliability *ARGS: setup
    "{{py}}" -m reliability {{ARGS}}

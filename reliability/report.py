"""RELIABILITY.md: the campaigns' figures, each with the command that produced it."""

from __future__ import annotations

from collections.abc import Sequence

from reliability.common import CampaignResult, Figure

NOT_COVERED = (
    "Real hardware: every device here is fota-vmcu (the mcu/ receiver and the MCUboot "
    "model on a pty); real UART drivers, USB CDC re-enumeration and real flash timing are "
    "not exercised.",
    "Power loss *during* a flash operation (a torn write or a half-erased sector): the "
    "flash model cuts power between operations, as MCUboot's simulator does.",
    "The bridge killed on the faulty line, or the device killed while the bridge is "
    "down: each fault is injected alone.",
    "Mutual-TLS brokers, AWS IoT Core itself, and a file server other than the local "
    "jobs service's.",
    "Raw framing, SMPv1-only devices, overwrite-only boards and direct mode (the MCU "
    "running the jobs client itself).",
    "Corruption the CRC-16 lets through (1 in 65,536 corrupted packets): counted only as "
    "far as the campaigns happen to meet it.",
)


def _table(fig: Figure) -> list[str]:
    out = ["| " + " | ".join(fig.header) + " |", "|" + "---|" * len(fig.header)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in fig.rows]
    return out


def render(
    results: Sequence[CampaignResult], env: dict[str, str], command: str, seconds: float
) -> str:
    lines = [
        "# Reliability",
        "",
        "What the update flow does when things break, measured by `python -m reliability` "
        "(the `reliability/` package; `just reliability`). The safety invariants are also "
        "asserted, at the `--quick` size, by `tests/test_reliability_quick.py`. Timings are "
        "reported, never asserted.",
        "",
        f"- Command: `{command}`",
        f"- Date: {env['date']}",
        f"- Commit: {env['commit']}",
        f"- Machine: {env['machine']}; Python {env['python']}",
        f"- Total time: {seconds / 60:.1f} min",
        "",
        "| campaign | invariants | violations | seconds |",
        "|---|---|---|---|",
    ]
    for r in results:
        verdict = "hold" if not r.violations else "**BROKEN**"
        lines.append(f"| {r.title} | {verdict} | {len(r.violations)} | {r.seconds:.0f} |")
    for r in results:
        lines += ["", f"## {r.title}", ""]
        doc = (r.data.get("doc") or "").strip()
        if doc:
            lines += [doc, ""]
        for fig in r.figures:
            lines += [
                f"### {fig.title}",
                "",
                f"Produced by `{command}`; alone: `{fig.command}`.",
                "",
            ]
            if fig.processes:
                lines += ["Processes (upper-case words stand for files of the run):", ""]
                lines += [f"- `{p}`" for p in fig.processes] + [""]
            lines += _table(fig)
            if fig.notes:
                lines.append("")
                lines += [f"- {n}" for n in fig.notes]
            lines.append("")
        if r.notes:
            lines += [f"- {n}" for n in r.notes] + [""]
        if r.violations:
            lines += ["Invariant violations:", ""]
            lines += [f"- {v}" for v in r.violations[:30]]
            if len(r.violations) > 30:
                lines.append(f"- ... and {len(r.violations) - 30} more")
            lines.append("")
    lines += ["## Not covered", ""] + [f"- {n}" for n in NOT_COVERED] + [""]
    return "\n".join(lines)

"""``python -m reliability [--quick] [--only NAME ...] [--out FILE]``: run the campaigns
and write RELIABILITY.md at the repository root (exit 1 if an invariant broke)."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from fota_common.cli import OneLineParser, run
from reliability import crashes, infra, link, powerloss
from reliability.common import REPO_ROOT, CampaignResult, environment
from reliability.report import render

CAMPAIGNS: dict[str, ModuleType] = {
    "link": link,
    "powerloss": powerloss,
    "crashes": crashes,
    "infra": infra,
}


def run_campaigns(
    names: list[str], quick: bool, work: Path, say: Callable[[str], None] = print
) -> list[CampaignResult]:
    results = []
    for name in names:
        module = CAMPAIGNS[name]
        say(f"reliability: {name} ...")
        t0 = time.monotonic()
        try:
            res: CampaignResult = module.run(work / name, quick=quick)
        except Exception as exc:  # a harness failure is reported, and fails the run
            res = CampaignResult(name, f"{name} (the campaign itself failed)")
            res.violate(f"{type(exc).__name__}: {exc}")
            res.seconds = time.monotonic() - t0
        res.data["doc"] = module.__doc__ or ""
        say(f"reliability: {name}: {len(res.violations)} invariant violations, {res.seconds:.0f} s")
        for v in res.violations[:10]:
            say(f"  - {v}")
        results.append(res)
    return results


def _unwritable(out: Path) -> str | None:
    """Why the report cannot be written to ``out``, or None."""
    if out.is_dir():
        return "it is a directory"
    parent = out.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        return "permission denied"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run under the one CLI runner: every error is one line and exit 2."""
    return run("reliability", lambda: _main(argv))


def _main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m reliability", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the small size the tests run")
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(CAMPAIGNS),
        metavar="NAME",
        help=f"run only this campaign (repeatable): {', '.join(CAMPAIGNS)}",
    )
    ap.add_argument(
        "--out",
        default=str(REPO_ROOT / "RELIABILITY.md"),
        help="report file (default: RELIABILITY.md at the repository root)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args(argv)
    names = args.only or list(CAMPAIGNS)
    problem = _unwritable(Path(args.out))
    if problem:  # found before the campaigns run, not after
        print(f"reliability: error: cannot write --out {args.out}: {problem}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    logging.basicConfig(
        filename=str(work / "reliability.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = shlex.join(["python", "-m", "reliability", *(argv or sys.argv[1:])])
    t0 = time.monotonic()
    try:
        results = run_campaigns(names, args.quick, work)
    finally:
        if args.keep:
            print(f"reliability: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    # Reasons may quote the ports and files of the work directory: never its path.
    text = render(results, environment(), command, time.monotonic() - t0)
    text = text.replace(str(work), "WORK")
    try:
        Path(args.out).write_text(text)
    except OSError as exc:
        print(f"reliability: error: cannot write --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    broken = sum(len(r.violations) for r in results)
    print(f"reliability: wrote {args.out}; {broken} invariant violations")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

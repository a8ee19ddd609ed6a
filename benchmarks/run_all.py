"""Run the benchmarks and collect their result tables into BENCHMARKS.md.

    python benchmarks/run_all.py                 # run every bench_*.py, then rebuild BENCHMARKS.md
    python benchmarks/run_all.py --only fa eigh  # run some of them
    python benchmarks/run_all.py --collect       # only rebuild BENCHMARKS.md from benchmarks/results/

Each script writes its own table (with the machine and its command) to benchmarks/results/<name>.md.
Peer packages compared against (frame-averaging-pytorch) are looked up in .bench-deps/ (``make bench``
installs them there, outside the project's environment).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADER = """# Benchmarks

Measured numbers, each with the machine and the command that produced it. Regenerate with
`make bench` (all) or `python benchmarks/run_all.py --only NAME`; tables live in
`benchmarks/results/` and are collected here by `python benchmarks/run_all.py --collect`.
Absolute times on shared 2-core machines drift 2-3x between runs, so comparisons are made by
alternating A and B in one process and reporting the median of the per-round ratios.
"""


def collect() -> Path:
    parts = [HEADER]
    for path in sorted((HERE / "results").glob("*.md")):
        parts.append(path.read_text().strip() + "\n")
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="names of benchmarks to run (bench_NAME.py)")
    ap.add_argument("--collect", action="store_true", help="only rebuild BENCHMARKS.md")
    args = ap.parse_args()
    if not args.collect:
        scripts = sorted(HERE.glob("bench_*.py"))
        if args.only:
            wanted = {f"bench_{n}.py" for n in args.only}
            missing = wanted - {s.name for s in scripts}
            if missing:
                ap.error(f"unknown benchmark(s): {sorted(missing)}")
            scripts = [s for s in scripts if s.name in wanted]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / ".bench-deps"), env.get("PYTHONPATH")]))
        failed = []
        for script in scripts:
            print(f"=== {script.name}", flush=True)
            if subprocess.call([sys.executable, str(script)], cwd=ROOT, env=env) != 0:
                failed.append(script.name)
        if failed:
            print(f"failed: {failed}", file=sys.stderr)
    print(f"wrote {collect()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

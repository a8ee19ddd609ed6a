"""Run the benchmarks and collect their headline tables into BENCHMARKS.md.

    python benchmarks/run_all.py                 # run every bench_*.py, then rebuild BENCHMARKS.md
    python benchmarks/run_all.py --only fa eigh  # run some of them
    python benchmarks/run_all.py --collect       # only rebuild BENCHMARKS.md from benchmarks/results/

Each script writes its own tables (with the machine and its command) to benchmarks/results/<name>.md; those
files are the source. BENCHMARKS.md holds one headline table per file (the table after a
``<!-- headline -->`` line, else the file's first table) with its machine line and a link to the file.
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

Headline tables, one per benchmark. Each comes from the file it links to, in `benchmarks/results/`, which
holds the full tables, the machine, the command that produced them and the notes; this page is rebuilt from
those files by `python benchmarks/run_all.py --collect` (`make bench` runs the benchmarks first). Absolute
times on shared 2-core machines drift 2-3x between runs, so comparisons are made by alternating A and B in
one process and reporting the median of the per-round ratios. Write-ups of what the numbers taught us:
[docs/investigations/](docs/investigations/index.md). Per-run training results: [results/](results/report.md).
"""
MARKER = "<!-- headline -->"


def headline(text: str) -> tuple[str, list[str], str | None]:
    """``(title, table lines, machine line)`` of one results file: its first heading, the table after the
    ``<!-- headline -->`` marker (else its first table) and its first ``Machine:`` line, if any."""
    lines = text.splitlines()
    title = next((ln.lstrip("#").strip() for ln in lines if ln.startswith("#")), "untitled")
    start = next((i + 1 for i, ln in enumerate(lines) if ln.strip() == MARKER), 0)
    table: list[str] = []
    for ln in lines[start:]:
        if ln.startswith("|"):
            table.append(ln)
        elif table:
            break
    machine = next((ln.strip() for ln in lines if ln.startswith("Machine:")), None)
    return title, table, machine


def render(results_dir: Path = HERE / "results") -> str:
    """The text of BENCHMARKS.md built from ``results_dir/*.md``."""
    parts = [HEADER]
    for path in sorted(results_dir.glob("*.md")):
        title, table, machine = headline(path.read_text())
        rel = path.relative_to(ROOT).as_posix()
        block = [f"## {title}", ""]
        if table:
            block += table + [""]
        if machine:
            block += [machine, ""]
        block.append(f"Full tables, command and notes: [{rel}]({rel})")
        parts.append("\n".join(block) + "\n")
    return "\n".join(parts)


def collect() -> Path:
    out = ROOT / "BENCHMARKS.md"
    out.write_text(render())
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

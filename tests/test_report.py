"""The committed results (results/) and the report built from them."""

from __future__ import annotations

import builtins
import json
import subprocess
from pathlib import Path

import pytest

from equiframe.report import collect_runs, render_markdown, summarize, write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _tracked(*patterns: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.stdout.decode().split("\0") if p]


def test_every_committed_run_has_metrics_and_curves_and_no_plots():
    runs = sorted(p.parent for p in RESULTS.rglob("metrics.json"))
    assert len(runs) > 50
    for run in runs:
        rel = run.relative_to(RESULTS).parts
        assert len(rel) == 3 and rel[2].startswith("seed"), run  # <experiment>/<run>/seed<k>
        assert (run / "curves.csv").is_file(), run
        m = json.loads((run / "metrics.json").read_text())
        assert m["experiment"] == rel[0] and m["seed"] == int(rel[2].removeprefix("seed"))
        assert "experiment_config" in m and "train_config" in m and "test" in m
    assert not list(RESULTS.rglob("*.png"))


def test_tracked_checkpoints_stay_small():
    pts = _tracked("*.pt")
    total = sum(p.stat().st_size for p in pts if p.is_file())
    assert total < 20 * 2**20, f"tracked *.pt files: {total / 2**20:.1f} MB (limit 20 MB)"
    assert not [p for p in pts if p.is_relative_to(ROOT / "runs")], "runs/ is the (untracked) working directory"


def test_report_over_the_committed_results(tmp_path):
    finished, running = collect_runs(RESULTS)
    rows = summarize(finished)
    by = {(r["experiment"], r["run"]): r for r in rows}
    tf = by[("nbody", "tf-gnn@egnn-small")]
    assert tf["n_seeds"] == 3 and tf["metric"] == "mse"
    # runs are named by their directory: benchmark variants trained under one model name stay apart
    assert ("normals", "tf-pointnet-moments_i-i") in by and ("normals", "tf-pointnet_i-i") in by
    text = render_markdown(rows, running)
    assert "## nbody" in text and "## graphs" in text and "## normals" in text
    out = write_report(RESULTS, tmp_path / "report.md", plots=False)
    assert out.read_text() == text


def test_plots_without_matplotlib_say_how_to_get_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"equiframe\[plots\]"):
        write_report(RESULTS / "nbody" / "linear@egnn-small", tmp_path / "r.md", plots=True)
    # the tables alone need no matplotlib
    assert write_report(RESULTS / "nbody" / "linear@egnn-small", tmp_path / "r.md", plots=False).is_file()


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        collect_runs(tmp_path / "nope")


def _run_all():
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_md_is_rebuilt_from_benchmarks_results():
    run_all = _run_all()
    assert (ROOT / "BENCHMARKS.md").read_text() == run_all.render(), (
        "BENCHMARKS.md is out of date: run `python benchmarks/run_all.py --collect`")


def test_headline_takes_the_marked_table_else_the_first(tmp_path):
    run_all = _run_all()
    text = "# T\n\nMachine: m\n\n| a |\n|---|\n| 1 |\n\n<!-- headline -->\n| b |\n|---|\n| 2 |\n"
    assert run_all.headline(text) == ("T", ["| b |", "|---|", "| 2 |"], "Machine: m")
    assert run_all.headline(text.replace("<!-- headline -->\n", ""))[1] == ["| a |", "|---|", "| 1 |"]


def test_budget_states_the_learning_rate_schedule():
    from equiframe.report import _budget

    m = {"epochs_planned": 1800, "describe": {"n_train": 3000},
         "train_config": {"optim": {"lr": 1e-3, "schedule": "cosine", "min_lr_ratio": 0.01, "anneal_from": 1400}}}
    assert _budget(m) == "n_train=3000, 1800 ep, lr 0.001, cosine from epoch 1400 to 1e-05"
    m["train_config"]["optim"] = {"lr": 1e-3}  # runs written before the schedule existed: constant
    assert _budget(m) == "n_train=3000, 1800 ep, lr 0.001"

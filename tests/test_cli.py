"""The ``equiframe`` command line: help everywhere, data / train / eval / report / demo, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from equiframe.cli import build_parser, main

SIMS = ["--sims", "64", "32", "32"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "nbody"], ["train"], ["train", "nbody"], ["eval"], ["report"],
                                  ["demo"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: equiframe" in out


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "equiframe", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout and "train" in proc.stdout


def test_data_nbody_statistics(root, capsys):
    assert main(["data", "nbody", "--root", str(root / "cache"), *SIMS, "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    assert "zero-motion" in out and "train" in out and "test" in out
    stats = json.loads(out[out.index("{"):])
    assert stats["train"]["n_sims"] == 64 and 0.1 < stats["test"]["zero_motion_mse"] < 1.0


def test_train_eval_report(root, capsys):
    base = ["train", "nbody", "--model", "linear", "--epochs", "2", "--seeds", "0", "1", "--batch-size", "16", *SIMS,
            "--data-root", str(root / "cache"), "--out", str(root / "runs"), "--quiet", "--threads", "1"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "seed 0: test mse" in out and "mean ± std over 2 seeds" in out
    run = root / "runs" / "nbody" / "linear@egnn-small" / "seed0"  # the default data: the published set
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_config"]["optim"]["lr"] == 1e-3 and metrics["epochs_run"] == 2
    # an existing run: clear error unless --resume / --overwrite
    assert main(base) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--resume"]) == 0
    capsys.readouterr()
    # eval: run directory, checkpoint file, directory of runs
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"test mse {metrics['test']['mse']:.6g}" in out
    assert main(["eval", str(run / "checkpoint.pt"), "--split", "valid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "valid"
    assert main(["eval", str(root / "runs"), "--json", "--diagnostics"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 2 and "rotation" in res[0]["diagnostics"]
    # report
    report = root / "report" / "r.md"
    assert main(["report", str(root / "runs"), "--out", str(report)]) == 0
    text = report.read_text()
    assert "| linear@egnn-small |" in text and "0.0819" in text and "± " in text
    assert (report.parent / "r_nbody_curves.png").is_file() and (report.parent / "r_nbody_rotation.png").is_file()


def test_train_on_the_egnn_stream(root, capsys):
    cache = str(root / "cache")
    assert main(["data", "nbody", "--root", cache, *SIMS, "--quiet"]) == 0  # the default
    assert "egnn stream, seed 43" in capsys.readouterr().out
    assert main(["data", "nbody", "--root", cache, "--stream", "split", *SIMS, "--quiet"]) == 0
    assert "split stream, seed 0" in capsys.readouterr().out
    base = ["train", "nbody", "--model", "linear-vel", "--epochs", "1", *SIMS, "--data-stream", "egnn",
            "--data-root", cache, "--out", str(root / "runs3"), "--quiet", "--no-diagnostics"]
    assert main(base) == 0
    run = root / "runs3" / "nbody" / "linear-vel@egnn-small" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["describe"]["data"] == "egnn-small"
    assert main([*base, "--data-seed", "5"]) == 0  # another data set: another run directory
    assert (root / "runs3" / "nbody" / "linear-vel@egnn-seed5" / "seed0" / "metrics.json").is_file()
    # our per-split stream: seed 0 keeps the plain name of the runs made before the option, other seeds not
    assert main([*base, "--data-stream", "split"]) == 0
    assert (root / "runs3" / "nbody" / "linear-vel" / "seed0" / "metrics.json").is_file()
    assert main([*base, "--data-stream", "split", "--data-seed", "2"]) == 0
    assert (root / "runs3" / "nbody" / "linear-vel@generated-seed2" / "seed0" / "metrics.json").is_file()
    assert main(["report", str(root / "runs3"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "data egnn-small" in out
    row = next(line for line in out.splitlines() if line.startswith("| linear-vel@egnn-small |"))
    assert "| 0.0819 |" in row  # the published number beside a run named after its data set


def test_report_lists_runs_in_progress(root, capsys):
    from equiframe.report import collect_runs

    base = ["train", "nbody", "--model", "gnn", "--hidden", "8", "--layers", "1", "--epochs", "1", *SIMS,
            "--data-root", str(root / "cache"), "--out", str(root / "runs2"), "--quiet", "--no-diagnostics"]
    assert main(base) == 0
    (root / "runs2" / "nbody" / "gnn@egnn-small" / "seed0" / "metrics.json").unlink()  # as if killed
    finished, running = collect_runs(root / "runs2")
    assert not finished and running[0]["run"] == "gnn@egnn-small" and running[0]["epochs_done"] == 1
    assert main(["report", str(root / "runs2"), "--no-plots"]) == 0
    assert "in progress" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["train", "nbody", "--model", "transformer"], "invalid choice"),
    (["train", "nbody", "--model", "gnn", "--epochs", "0"], "positive integer"),
    (["train", "nbody", "--model", "gnn", "--lr", "-1"], "positive number"),
    (["train", "nbody", "--model", "gnn", "--resume", "--overwrite"], "not allowed"),
    (["data", "nbody", "--sims", "10"], "expected 3 arguments"),
])
def test_argument_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["eval", "/nonexistent/run"], "does not exist"),
    (["report", "/nonexistent/runs"], "not a directory"),
    (["train", "nbody", "--model", "gnn", "--n-train", "100", *SIMS], "n_train"),
    (["train", "nbody", "--model", "gnn", "--egnn-npy", "/nonexistent"], "--egnn-npy"),
    (["train", "nbody", "--model", "tf-gnn", "--hidden-reps", "8x9q", *SIMS], "reps"),
    (["train", "nbody", "--model", "gnn", "--device", "quantum", *SIMS], "device"),
])
def test_config_errors_are_clear(argv, needle, capsys, tmp_path):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "runs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("equiframe ") and needle in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_demo_quick(root, capsys):
    out = root / "demo"
    assert main(["demo", "--quick", "--quiet", "--no-pointnet", "--out", str(out), "--data-root",
                 str(root / "cache")]) == 0
    text = (out / "report.md").read_text()
    assert "Reduced budget" in text and "fa-gnn" in text and "tf-gnn" in text and "| gnn |" in text
    assert "0.0057" in text  # the published FA-GNN number beside ours
    assert (out / "learning_curves.png").is_file() and (out / "error_vs_rotation.png").is_file()
    assert f"report written to {out / 'report.md'}" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    eq = {r["run"]: r["diagnostics"]["equivariance_error_f64"] for r in results["runs"]}
    assert eq["fa-gnn"] < 1e-9 and eq["tf-gnn"] < 1e-9 and eq["gnn"] > 1e-3


def test_parser_builds():
    parser = build_parser()
    args = parser.parse_args(["train", "nbody", "--model", "fa-gnn", "--seeds", "0", "1", "2"])
    assert args.seeds == [0, 1, 2] and args.fa_mode is None and args.batch_size == 100  # None: per variant
    assert args.weight_decay == 1e-12

"""One command grammar, ``equiframe VERB EXPERIMENT [options]``, for every experiment; the older spellings are
aliases that parse to the same handler and options; CLI mistakes end with one line on stderr and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from equiframe.cli import build_parser, main

# the sub-command names themselves (they differ between the spellings by construction)
_SPELLING = {"command", "dataset", "experiment", "graphs_command", "normals_command", "expect_experiment"}

# (older spelling, new spelling): the same options after the command words
ALIASES = [
    (["graphs", "classify"], ["train", "graphs"],
     ["--dataset", "csl", "--model", "fa-gin-id", "--frame", "canonical", "--epochs", "3", "--folds", "0", "2",
      "--seeds", "1", "--resume-or-start", "--out", "o"]),
    (["graphs", "separate"], ["eval", "graphs-separation"],
     ["--dataset", "sr25", "--model", "gin", "--seeds", "2", "--threshold", "0.01", "--json"]),
    (["normals", "train"], ["train", "normals"],
     ["--model", "tf-pointnet", "--setting", "i/so3", "--epochs", "3", "--tf-ratios", "0.5", "--resume"]),
    (["normals", "estimate"], ["estimate", "normals"], ["scan.ply", "-o", "out.xyz", "--orient", "--samples", "7"]),
    (["normals", "table", "--out"], ["report", "normals"], ["some/runs"]),
    (["data", "fetch"], ["data", "graphs"], ["sr25", "--data-dir", "d", "--no-checksum"]),
    (["eval"], ["eval", "nbody"], ["runs/nbody/gnn/seed0", "--split", "valid", "--which", "last", "--json"]),
    (["eval"], ["eval", "graphs"], ["runs/graphs", "--diagnostics"]),
    (["eval"], ["eval", "normals"], ["runs/normals", "--batch-size", "4"]),
]


_PATH_KINDS = {"output_dirs", "cache_dirs", "existing_dirs", "output_files", "output_paths"}  # see equiframe.cli.check_paths


def _options(ns) -> dict:
    """The parsed options; of the declared path checks only the attributes (a label names the option as spelt)."""
    out = {k: v for k, v in vars(ns).items() if k not in _SPELLING}
    for k in _PATH_KINDS & out.keys():
        out[k] = tuple(e if isinstance(e, str) else e[0] for e in out[k])
    return out


@pytest.mark.parametrize("old,new,options", ALIASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_old_and_new_spelling_parse_the_same(old, new, options):
    parser = build_parser()
    a = parser.parse_args([*old, *options])
    b = parser.parse_args([*new, *options])
    assert a.func is b.func
    assert _options(a) == _options(b)


def test_the_defaults_agree_too():
    """No option given: the aliases still share every default (one argument function per command)."""
    parser = build_parser()
    assert _options(parser.parse_args(["normals", "train"])) == _options(parser.parse_args(["train", "normals"]))
    assert _options(parser.parse_args(["normals", "table"])) == _options(parser.parse_args(["report", "normals"]))
    assert parser.parse_args(["eval", "nbody"]).path == "runs/nbody"  # default RUNS per experiment


@pytest.mark.parametrize("argv", [
    ["data", "nbody"], ["data", "normals", "--source", "procedural"], ["data", "graphs", "exp"],
    ["train", "nbody", "--model", "gnn"], ["train", "graphs", "--dataset", "exp", "--model", "gin"],
    ["train", "normals"],
    ["eval", "nbody"], ["eval", "graphs"], ["eval", "normals"],
    ["eval", "graphs-separation", "--dataset", "exp", "--model", "fa-mlp"],
    ["estimate", "normals", "in.ply", "-o", "out.ply"],
    ["report"], ["report", "normals"], ["report", "results"],
])
def test_every_experiment_reachable(argv):
    args = build_parser().parse_args(argv)
    assert callable(args.func)


@pytest.mark.parametrize("argv", [["eval", "nbody"], ["eval", "graphs-separation"], ["train", "graphs"],
                                  ["train", "normals"], ["estimate", "normals"], ["report", "normals"],
                                  ["data", "graphs"], ["eval"], ["report"], ["estimate"]])
def test_help_of_the_new_spellings(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert f"usage: equiframe {' '.join(argv)}" in capsys.readouterr().out


def test_top_level_help_lists_the_grammar_and_the_aliases(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for line in ("equiframe train nbody | graphs | normals", "equiframe eval graphs-separation",
                 "equiframe estimate normals FILE -o OUT", "equiframe graphs classify ...   = train graphs"):
        assert line in out


@pytest.mark.parametrize("argv,new", [(["graphs"], "train graphs"), (["graphs"], "eval graphs-separation"),
                                      (["normals"], "train normals"), (["normals"], "estimate normals"),
                                      (["data"], "data graphs")])
def test_older_spellings_name_the_new_one(argv, new, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert new in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------------------------ mistakes
def _one_line_error(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prefix}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv,prefix,needle", [
    (["train", "nbody", "--model", "gnn", "--epochs", "-1"], "equiframe train nbody", "positive integer"),
    (["train", "graphs", "--dataset", "csl", "--model", "gin", "--epochs", "0"], "equiframe train graphs",
     "positive integer"),
    (["graphs", "classify", "--dataset", "csl", "--model", "gin", "--folds", "5"], "equiframe graphs classify",
     "fold 0..4"),
    (["train", "graphs", "--dataset", "csl", "--model", "gin", "--lr", "-0.1"], "equiframe train graphs",
     "positive number"),
    (["train", "normals", "--n-train", "-3"], "equiframe train normals", "positive integer"),
    (["normals", "train", "--seeds", "-1"], "equiframe normals train", "integer >= 0"),
    (["eval", "graphs-separation", "--dataset", "exp", "--model", "gin", "--seeds", "0"],
     "equiframe eval graphs-separation", "positive integer"),
    (["estimate", "normals", "a.ply", "-o", "b.ply", "--samples", "0"], "equiframe estimate normals",
     "positive integer"),
    (["data", "normals", "--parts", "-5"], "equiframe data normals", "positive integer"),
    (["data", "graphs", "exp", "--timeout", "0"], "equiframe data graphs", "positive number"),
    (["train", "nbody", "--model", "transformer"], "equiframe train nbody", "invalid choice"),
    (["train", "graphs", "--dataset", "zinc", "--model", "gin"], "equiframe train graphs", "invalid choice"),
    (["train", "normals", "--model", "pointnet++"], "equiframe train normals", "invalid choice"),
    (["eval", "graphs-separation", "--dataset", "exp", "--model", "mlp"], "equiframe eval graphs-separation",
     "invalid choice"),
    (["estimate", "meshes", "a.ply"], "equiframe estimate", "invalid choice"),
    (["data", "graphs", "zinc"], "equiframe data graphs", "invalid choice"),
    (["train", "normals", "--resume", "--overwrite"], "equiframe train normals", "not allowed"),
    (["train", "graphs", "--dataset", "csl", "--model", "gin", "--resume", "--resume-or-start"],
     "equiframe train graphs", "not allowed"),
])
def test_bad_option_values_are_one_line(argv, prefix, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in _one_line_error(capsys, prefix)


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    np.savetxt(tmp_path / "cloud.xyz", np.random.default_rng(0).normal(size=(64, 3)))
    return tmp_path


# {p}: the test's directory; "afile" is a file, "missing" does not exist
PATH_MISTAKES = [
    # a file where a directory is expected
    (["train", "nbody", "--model", "gnn", "--out", "{p}/afile"], "--out: {p}/afile is a file"),
    (["train", "graphs", "--dataset", "csl", "--model", "gin", "--out", "{p}/afile/sub"], "--out: {p}/afile is a file"),
    (["graphs", "classify", "--dataset", "csl", "--model", "gin", "--out", "{p}/afile"], "--out: {p}/afile is a file"),
    (["train", "normals", "--out", "{p}/afile"], "--out: {p}/afile is a file"),
    (["train", "normals", "--root", "{p}/afile"], "--root: {p}/afile is a file"),
    (["demo", "--out", "{p}/afile"], "--out: {p}/afile is a file"),
    (["data", "nbody", "--root", "{p}/afile"], "--root: {p}/afile is a file"),
    (["data", "normals", "--root", "{p}/afile"], "--root: {p}/afile is a file"),
    (["normals", "build", "--root", "{p}/afile"], "--root: {p}/afile is a file"),
    (["data", "graphs", "exp", "--data-dir", "{p}/afile"], "--data-dir: {p}/afile is a file"),
    (["eval", "graphs-separation", "--dataset", "exp", "--model", "gin", "--data-dir", "{p}/afile"],
     "--data-dir: {p}/afile is a file"),
    (["report", "normals", "{p}/afile"], "root: {p}/afile is a file"),
    # a missing input
    (["eval", "nbody", "{p}/missing"], "does not exist"),
    (["eval", "{p}/missing"], "does not exist"),
    (["report", "{p}/missing"], "not a directory"),
    (["report", "normals", "{p}/missing"], "root: {p}/missing does not exist"),
    (["normals", "table", "--out", "{p}/missing"], "--out: {p}/missing does not exist"),
    (["train", "graphs", "--dataset", "exp", "--model", "gin", "--data-dir", "{p}/missing"],
     "--data-dir: {p}/missing does not exist"),
    (["graphs", "separate", "--dataset", "exp", "--model", "gin", "--data-dir", "{p}/missing"],
     "--data-dir: {p}/missing does not exist"),
    (["train", "nbody", "--model", "gnn", "--egnn-npy", "{p}/missing"], "--egnn-npy: {p}/missing does not exist"),
    (["estimate", "normals", "{p}/missing.ply", "-o", "{p}/o.ply"], "no such file"),
    (["eval", "nbody", "{p}/afile"], "checkpoint"),
    (["eval", "graphs", "{p}/missing"], "does not exist"),
    (["eval", "normals", "{p}/missing"], "does not exist"),
    (["data", "nbody", "--egnn-npy", "{p}/missing"], "--egnn-npy: {p}/missing does not exist"),
    (["normals", "estimate", "{p}/missing.ply", "-o", "{p}/o.ply"], "no such file"),
    (["graphs", "classify", "--dataset", "exp", "--model", "gin", "--data-dir", "{p}/missing"],
     "--data-dir: {p}/missing does not exist"),
    (["data", "graphs", "exp", "--url", "file://{p}/missing.txt", "--data-dir", "{p}/d", "--quiet"], "cannot reach"),
    (["data", "fetch", "sr25", "--url", "file://{p}/missing.g6", "--data-dir", "{p}/d", "--quiet"], "cannot reach"),
    # an output that cannot be written
    (["estimate", "normals", "{p}/cloud.xyz", "-o", "{p}/missing/o.ply"], "--output: the directory {p}/missing"),
    (["normals", "estimate", "{p}/cloud.xyz", "-o", "{p}"], "--output: {p} is a directory"),
    (["report", "{p}", "--out", "{p}"], "--out: {p} is a directory"),
    (["report", "{p}", "--out", "{p}/afile/r.md"], "--out: {p}/afile is a file"),
]


@pytest.mark.parametrize("argv,needle", PATH_MISTAKES, ids=lambda x: " ".join(x)[:60] if isinstance(x, list) else None)
def test_path_mistakes_are_one_line(argv, needle, paths, capsys):
    argv = [a.format(p=paths) for a in argv]
    assert main(argv) == 2
    line = _one_line_error(capsys, f"equiframe {argv[0]}")
    assert needle.format(p=paths) in line
    assert sorted(q.name for q in paths.iterdir()) == ["afile", "cloud.xyz"]  # nothing written


# ------------------------------------------------------------------------------------------ end to end
_CSL = ["--dataset", "csl", "--model", "gin", "--epochs", "1", "--folds", "0", "--hidden", "8", "--layers", "1",
        "--quiet", "--json"]
_NORMALS = ["--model", "pointnet", "--epochs", "1", "--n-train", "4", "--n-valid", "2", "--n-test", "2",
            "--n-points", "64", "--hidden", "8", "--quiet"]


@pytest.mark.parametrize("spelling", [["train", "graphs"], ["graphs", "classify"]])
def test_graphs_strict_resume_and_resume_or_start(spelling, tmp_path, capsys):
    base = [*spelling, *_CSL, "--out", str(tmp_path / "runs")]
    assert main([*base, "--resume"]) == 2  # nothing to continue: an error, not a fresh start
    assert "--resume-or-start" in _one_line_error(capsys, f"equiframe {spelling[0]}")
    assert not list(tmp_path.rglob("checkpoint.pt"))
    assert main([*base, "--resume-or-start"]) == 0  # starts
    first = json.loads(capsys.readouterr().out)
    assert main([*base, "--resume", "--epochs", "2"]) == 0  # continues the run it started
    second = json.loads(capsys.readouterr().out)
    assert first["runs"][0]["epochs_run"] == 1 and second["runs"][0]["epochs_run"] == 2
    assert main(["eval", "graphs", str(tmp_path / "runs"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "graphs"
    assert main(["eval", "nbody", str(tmp_path / "runs")]) == 2  # the wrong experiment is named
    assert "is a graphs run, not nbody" in _one_line_error(capsys, "equiframe eval")


@pytest.mark.parametrize("spelling", [["train", "normals"], ["normals", "train"]])
def test_normals_strict_resume(spelling, tmp_path, capsys):
    base = [*spelling, *_NORMALS, "--out", str(tmp_path / "runs"), "--root", str(tmp_path / "cache")]
    assert main([*base, "--resume"]) == 2
    assert "no checkpoint" in _one_line_error(capsys, f"equiframe {spelling[0]}")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("checkpoint.pt"))


@pytest.mark.parametrize("spelling", [["estimate", "normals"], ["normals", "estimate"]])
def test_estimate_normals_both_spellings(spelling, tmp_path, capsys):
    from equiframe.datasets.mesh_io import read_point_cloud, write_point_cloud  # noqa: PLC0415
    from equiframe.pretrained.normals import available_normal_models  # noqa: PLC0415

    if "fa-local-pointnet-cad" not in available_normal_models():
        pytest.skip("no shipped normal estimator")
    x = torch.nn.functional.normalize(torch.randn(300, 3, generator=torch.Generator().manual_seed(0)), dim=1).numpy()
    write_point_cloud(tmp_path / "scan.ply", x, binary=False)
    assert main([*spelling, str(tmp_path / "scan.ply"), "-o", str(tmp_path / "out.xyz"), "--orient", "--quiet"]) == 0
    out = read_point_cloud(tmp_path / "out.xyz")
    np.testing.assert_allclose(out.pos, x, atol=1e-5)
    assert (np.abs((out.normal * x).sum(1)) > 0.9).mean() > 0.9  # the sphere's normals, up to sign
    assert "unoriented" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ unwritable outputs
def _unwritable_dir(tmp_path):
    """A directory that takes no new file: mode 0o555 for a normal user; for root (who ignores the bits) a
    directory of sysfs, if this machine has one that refuses files."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    if os.geteuid() != 0:
        d = tmp_path / "readonly"
        d.mkdir()
        d.chmod(0o555)
        return d
    for d in (Path("/sys"), Path("/proc")):
        try:
            tempfile.TemporaryFile(dir=d).close()
        except OSError:
            return d
    pytest.skip("running as root and no directory here refuses new files")


# {u}: a directory that cannot be written; {p}: a writable directory with cloud.xyz
UNWRITABLE = [
    ["train", "nbody", "--model", "gnn", "--out", "{u}/runs"],
    ["train", "nbody", "--model", "gnn", "--data-root", "{u}/cache"],
    ["train", "graphs", "--dataset", "csl", "--model", "gin", "--out", "{u}/runs"],
    ["graphs", "classify", "--dataset", "csl", "--model", "gin", "--out", "{u}/runs"],
    ["train", "normals", "--out", "{u}/runs"],
    ["train", "normals", "--root", "{u}/cache"],
    ["normals", "train", "--out", "{u}/runs"],
    ["demo", "--out", "{u}/demo"],
    ["demo", "--data-root", "{u}/cache", "--out", "{p}/demo"],
    ["data", "nbody", "--root", "{u}/cache"],
    ["data", "normals", "--root", "{u}/cache"],
    ["normals", "build", "--root", "{u}/cache"],
    ["data", "graphs", "exp", "--data-dir", "{u}/data"],
    ["data", "fetch", "sr25", "--data-dir", "{u}/data"],
    ["estimate", "normals", "{p}/cloud.xyz", "-o", "{u}/out.xyz"],
    ["normals", "estimate", "{p}/cloud.xyz", "-o", "{u}/out.xyz"],
    ["report", "{p}", "--out", "{u}/report.md"],
    ["report", "{p}", "--out", "{u}/sub/report.md"],
]


@pytest.mark.parametrize("argv", UNWRITABLE, ids=lambda x: " ".join(x)[:60])
def test_unwritable_outputs_are_one_line(argv, paths, capsys):
    u = _unwritable_dir(paths)
    argv = [a.format(p=paths, u=u) for a in argv]
    assert main(argv) == 2
    line = _one_line_error(capsys, f"equiframe {argv[0]}")
    option = [argv[i] for i in range(len(argv) - 1) if str(u) in argv[i + 1]][0]
    assert f"{'--output' if option == '-o' else option}: {u} is not writable" in line, line
    assert sorted(q.name for q in paths.iterdir() if q.name != "readonly") == ["afile", "cloud.xyz"]


# ------------------------------------------------------------------------------------------ malformed inputs
@pytest.fixture
def garbled(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "garbled.ply").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (tmp_path / "trunc.ply").write_text("ply\nformat ascii 1.0\nelement vertex 10\nproperty float x\n"
                                        "property float y\nproperty float z\nend_header\n1 2 3\n4 5\n")
    (tmp_path / "trunc.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    (tmp_path / "npy").mkdir()
    (tmp_path / "npy" / "loc_train_charged5_initvel1small.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "exp.txt").write_text("1200\n3 1\n0 1 1\n")
    return tmp_path


MALFORMED = [
    (["estimate", "normals", "{g}/garbled.ply", "-o", "{g}/o.xyz"], "garbled.ply"),
    (["estimate", "normals", "{g}/trunc.ply", "-o", "{g}/o.xyz"], "trunc.ply"),
    (["estimate", "normals", "{g}/trunc.off", "-o", "{g}/o.xyz"], "trunc.off"),
    (["normals", "estimate", "{g}/adir", "-o", "{g}/o.xyz"], "adir"),
    (["eval", "nbody", "{g}/run"], "checkpoint"),
    (["eval", "graphs", "{g}/run"], "checkpoint"),
    (["eval", "normals", "{g}/run"], "checkpoint"),
    (["eval", "{g}/run/checkpoint.pt"], "checkpoint"),
    (["train", "nbody", "--model", "gnn", "--egnn-npy", "{g}/npy", "--quiet", "--out", "{g}/runs"], "EGNN"),
    (["data", "nbody", "--egnn-npy", "{g}/npy"], "EGNN"),
    (["data", "graphs", "exp", "--url", "file://{g}/exp.txt", "--data-dir", "{g}/data", "--no-checksum", "--quiet"],
     "not a valid exp"),
    (["eval", "graphs-separation", "--dataset", "exp", "--model", "gin", "--data-dir", "{g}/adir"], "data_dir: no"),
]


@pytest.mark.parametrize("argv,needle", MALFORMED, ids=lambda x: " ".join(x)[:60] if isinstance(x, list) else None)
def test_malformed_inputs_are_one_line(argv, needle, garbled, capsys):
    argv = [a.format(g=garbled) for a in argv]
    assert main(argv) == 2
    assert needle in _one_line_error(capsys, f"equiframe {argv[0]}")
    assert not (garbled / "o.xyz").exists() and not list(garbled.rglob("metrics.json"))


def test_unexpected_errors_are_one_line_too(monkeypatch, tmp_path, capsys):
    """An error of another kind (a bug, a failing dependency) is one line too, naming its class; the traceback
    is one environment variable away."""
    import equiframe.report  # noqa: PLC0415

    def boom(*args, **kwargs):
        raise RuntimeError("something\ninside broke")

    monkeypatch.setattr(equiframe.report, "write_report", boom)
    assert main(["report", str(tmp_path)]) == 2
    line = _one_line_error(capsys, "equiframe report")
    assert "RuntimeError: something inside broke" in line and "EQUIFRAME_DEBUG=1" in line
    monkeypatch.setenv("EQUIFRAME_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["report", str(tmp_path)])


def test_train_with_missing_egnn_files_leaves_no_run_behind(garbled, capsys):
    argv = ["train", "nbody", "--model", "gnn", "--egnn-npy", f"{garbled}/npy", "--quiet", "--out", f"{garbled}/runs"]
    assert main(argv) == 2
    assert "egnn_npy: missing EGNN n-body file(s)" in _one_line_error(capsys, "equiframe train")
    assert not (garbled / "runs").exists()


def test_report_normals_without_runs_is_an_error(tmp_path, capsys):
    assert main(["report", "normals", str(tmp_path)]) == 2
    assert "no normals runs" in _one_line_error(capsys, "equiframe report")

"""The shared training loop: result files, best-validation selection, resume after a kill (bitwise
identical), early stopping, errors; with the n-body experiment and a task-agnostic toy experiment."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import nn

from equiframe.datasets.nbody import NBodyConfig
from equiframe.experiments import EXPERIMENTS, experiment_from_dict, get_experiment_class
from equiframe.experiments.nbody import NBodyExperiment, NBodyExperimentConfig
from equiframe.train import (
    CHECKPOINT,
    METRICS,
    Experiment,
    OptimConfig,
    TrainConfig,
    atomic_save,
    evaluate,
    evaluate_run,
    fit,
    load_checkpoint,
    train,
)

TINY = NBodyConfig(n_train=64, n_valid=32, n_test=32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("nbody_cache"))


def nbody(data_root, model="gnn", **kw):
    opts = dict(model=model, n_train=64, n_valid=32, n_test=32, hidden=8, layers=1, data=TINY, data_root=data_root,
                diagnostic_samples=16, rotation_angles=4)
    opts.update(kw)
    return NBodyExperiment(NBodyExperimentConfig(**opts))


def cfg(tmp_path, **kw):
    opts = dict(epochs=3, batch_size=16, out=str(tmp_path / "runs"), quiet=True, threads=1)
    opts.update(kw)
    return TrainConfig(**opts)


# ------------------------------------------------------------------------------------------ a toy task
class ToyExperiment(Experiment):
    """Linear regression on a TensorDataset: the loop must not need anything n-body specific."""

    name = "toy"
    metric = "mse"

    def __init__(self, constant_metric: bool = False):
        self.constant_metric = constant_metric
        g = torch.Generator().manual_seed(0)
        X = torch.randn(96, 4, generator=g)
        y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.01 * torch.randn(96, generator=g)
        self.data = {"train": torch.utils.data.TensorDataset(X[:64], y[:64]),
                     "valid": torch.utils.data.TensorDataset(X[64:80], y[64:80]),
                     "test": torch.utils.data.TensorDataset(X[80:], y[80:])}

    def to_dict(self):
        return {"constant_metric": self.constant_metric}

    @classmethod
    def from_dict(cls, d):
        return cls(**d)

    def dataset(self, split):
        return self.data[split]

    def set_epoch(self, epoch):
        self.epochs_seen = [*getattr(self, "epochs_seen", []), epoch]

    def build_model(self):
        return nn.Linear(4, 1)

    def loss(self, model, batch):
        X, y = batch
        return (model(X)[:, 0] - y).square().mean()

    def metrics(self, model, batch):
        X, y = batch
        err = (model(X)[:, 0] - y).square()
        return {"mse": (1.0 if self.constant_metric else float(err.sum()), 1.0 if self.constant_metric else err.numel())}


def test_toy_experiment_trains_without_nbody(tmp_path):
    res = fit(ToyExperiment(), cfg(tmp_path, epochs=30, optim=OptimConfig(lr=0.05)), seed=0)
    assert res.metrics["test"]["mse"] < 0.1
    assert (res.run_dir / "curves.png").is_file()
    assert res.run_dir == tmp_path / "runs" / "toy" / "default" / "seed0"


def test_set_epoch_hook_also_after_resume(tmp_path):
    exp = ToyExperiment()
    fit(exp, cfg(tmp_path, epochs=2), seed=0)
    fit(exp, cfg(tmp_path, epochs=4, resume=True), seed=0)
    assert exp.epochs_seen == [0, 1, 2, 3]


def test_dataloader_workers_give_the_same_result(tmp_path):
    a = fit(ToyExperiment(), cfg(tmp_path, epochs=2, name="w0"), seed=0)
    b = fit(ToyExperiment(), cfg(tmp_path, epochs=2, name="w1", num_workers=1), seed=0)
    assert a.metrics["test"] == b.metrics["test"]


def test_early_stopping(tmp_path):
    res = fit(ToyExperiment(constant_metric=True), cfg(tmp_path, epochs=20, patience=2), seed=0)
    m = res.metrics
    assert m["stopped_early"] and m["epochs_run"] == 3 and m["best_epoch"] == 1
    ckpt = load_checkpoint(res.run_dir)
    assert ckpt["finished"] and ckpt["epoch"] == 3


# ------------------------------------------------------------------------------------------ n-body runs
def test_fit_writes_results(tmp_path, data_root):
    exp = nbody(data_root)
    res = train(exp, cfg(tmp_path, seeds=(0, 1)))
    assert [r.run_dir.name for r in res] == ["seed0", "seed1"]
    run = res[0].run_dir
    assert run == tmp_path / "runs" / "nbody" / "gnn" / "seed0"
    for f in (CHECKPOINT, METRICS, "curves.csv", "curves.png"):
        assert (run / f).is_file(), f
    assert not list(run.glob(".*tmp*"))  # atomic writes leave no temporary files
    m = json.loads((run / METRICS).read_text())
    for key in ("test", "best_epoch", "epochs_run", "wall_time_s", "experiment_config", "train_config", "version",
                "device", "diagnostics", "n_params"):
        assert key in m, key
    assert m["epochs_run"] == 3 and m["experiment"] == "nbody" and m["run"] == "gnn"
    rows = list(csv.DictReader(open(run / "curves.csv")))
    assert len(rows) == 3 and all(math.isfinite(float(r["train_loss"])) for r in rows)
    vals = [float(r["val_mse"]) for r in rows]
    assert m["best_epoch"] == 1 + vals.index(min(vals))
    assert m["best_val"]["mse"] == pytest.approx(min(vals))
    # the test metric is that of the best-validation weights
    model = exp.build_model()
    model.load_state_dict(load_checkpoint(run)["best"]["state"])
    assert evaluate(exp, model, "test", batch_size=16)["mse"] == pytest.approx(m["test"]["mse"], rel=1e-6)
    assert res[0].metrics["test"] != res[1].metrics["test"]  # seeds differ
    # diagnostics: the GNN is not equivariant, its error depends on the rotation
    d = m["diagnostics"]
    assert d["equivariance_error_f64"] > 1e-3 and len(d["rotation"]["mse"]) == 5


def test_equivariant_model_diagnostics(tmp_path, data_root):
    res = fit(nbody(data_root, model="egnn"), cfg(tmp_path, epochs=1), seed=0)
    d = res.metrics["diagnostics"]
    assert d["equivariance_error_f64"] < 1e-9
    mse = d["rotation"]["mse"]
    assert max(mse) - min(mse) <= 1e-4 * max(mse)


def test_float64_training(tmp_path, data_root):
    res = fit(nbody(data_root, model="tf-gnn", dtype="float64", hidden_reps="4x0n+2x1n"), cfg(tmp_path, epochs=1), seed=0)
    assert math.isfinite(res.metrics["test"]["mse"])
    assert res.metrics["diagnostics"]["equivariance_error_f64"] < 1e-9


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("model,kw", [("gnn", {}), ("fa-gnn", {"fa_mode": "stochastic"})])
def test_resume_after_kill_is_identical(tmp_path, data_root, model, kw):
    """A run killed after its epoch-2 checkpoint and resumed equals an uninterrupted run bitwise (FA-GNN
    stochastic consumes the global RNG while training: its state must be restored too)."""
    exp = nbody(data_root, model=model, **kw)
    full = fit(exp, cfg(tmp_path, epochs=5, checkpoint_every=2, name="full"), seed=3)

    def kill(epoch, row):
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(nbody(data_root, model=model, **kw), cfg(tmp_path, epochs=5, checkpoint_every=2, name="killed"), seed=3,
            callback=kill)
    part = load_checkpoint(tmp_path / "runs" / "nbody" / "killed" / "seed3")
    assert part["epoch"] == 2 and not part["finished"]
    resumed = fit(nbody(data_root, model=model, **kw),
                  cfg(tmp_path, epochs=5, checkpoint_every=2, name="killed", resume=True), seed=3)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]
    a, b = load_checkpoint(full.run_dir), load_checkpoint(resumed.run_dir)
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in a["history"]] == \
           [{k: v for k, v in r.items() if k != "time_s"} for r in b["history"]]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_extends_a_finished_run(tmp_path, data_root):
    exp = nbody(data_root)
    full = fit(exp, cfg(tmp_path, epochs=4, name="four"), seed=0)
    fit(exp, cfg(tmp_path, epochs=2, name="two"), seed=0)
    again = fit(exp, cfg(tmp_path, epochs=2, name="two", resume=True), seed=0)  # nothing to do
    assert again.metrics["epochs_run"] == 2
    ext = fit(exp, cfg(tmp_path, epochs=4, name="two", resume=True), seed=0)
    assert ext.metrics["test"] == full.metrics["test"] and ext.metrics["epochs_run"] == 4


def test_existing_run_needs_resume_or_overwrite(tmp_path, data_root):
    exp = nbody(data_root)
    fit(exp, cfg(tmp_path, epochs=1), seed=0)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(exp, cfg(tmp_path, epochs=1), seed=0)
    assert fit(exp, cfg(tmp_path, epochs=1, overwrite=True), seed=0).metrics["epochs_run"] == 1
    with pytest.raises(ValueError, match="lr"):  # resuming with other options is refused
        fit(exp, cfg(tmp_path, epochs=2, resume=True, optim=OptimConfig(lr=0.1)), seed=0)
    with pytest.raises(ValueError, match="hidden"):
        fit(nbody(data_root, hidden=12), cfg(tmp_path, epochs=2, resume=True), seed=0)


def test_evaluate_run_and_registry(tmp_path, data_root):
    res = fit(nbody(data_root, model="linear"), cfg(tmp_path, epochs=2), seed=0)
    out = evaluate_run(res.run_dir, device="cpu")
    assert out["metrics"]["mse"] == pytest.approx(res.metrics["test"]["mse"], rel=1e-6)
    assert out["epoch"] == res.metrics["best_epoch"]
    assert evaluate_run(res.run_dir / CHECKPOINT, split="valid")["split"] == "valid"
    assert "nbody" in EXPERIMENTS
    exp = experiment_from_dict("nbody", nbody(data_root).to_dict())
    assert exp.config == nbody(data_root).config
    with pytest.raises(ValueError, match="experiment"):
        experiment_from_dict("nope", {})
    assert get_experiment_class("nbody") is NBodyExperiment
    with pytest.raises(FileNotFoundError):
        evaluate_run(tmp_path / "missing")
    bad = tmp_path / "bad.pt"
    atomic_save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not an equiframe"):
        load_checkpoint(bad)


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="seeds"):
        TrainConfig(seeds=(0, 0))
    with pytest.raises(ValueError, match="lr"):
        OptimConfig(lr=-1.0)
    with pytest.raises(ValueError, match="resume"):
        TrainConfig(resume=True, overwrite=True)
    c = TrainConfig(epochs=7, seeds=(1, 2), optim=OptimConfig(lr=3e-4, grad_clip=1.0))
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="model"):
        NBodyExperimentConfig(model="transformer")
    with pytest.raises(ValueError, match="n_train"):
        NBodyExperimentConfig(n_train=5000)
    c = NBodyExperimentConfig(model="tf-gnn", n_train=10, n_valid=5, n_test=5, data=TINY)
    assert NBodyExperimentConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_nonfinite_loss_is_an_error(tmp_path, data_root):
    with pytest.raises(FloatingPointError, match="loss"):
        fit(nbody(data_root, model="linear"), cfg(tmp_path, epochs=2, optim=OptimConfig(lr=1e30)), seed=0)


def test_layerwise_fa_gnn_trains_and_is_equivariant(tmp_path, data_root):
    res = fit(nbody(data_root, model="fa-gnn", fa_variant="layerwise", hidden=6, layers=2), cfg(tmp_path, epochs=1),
              seed=0)
    # the layer-wise model trains on sampled frame elements by default and evaluates the full frame
    assert res.run_dir.parent.name == "fa-gnn-layerwise-stochastic"
    assert res.metrics["experiment_config"]["fa_mode"] == "stochastic"
    assert math.isfinite(res.metrics["test"]["mse"])
    assert res.metrics["diagnostics"]["equivariance_error_f64"] < 1e-9


def test_resume_fills_options_added_after_the_checkpoint(tmp_path, data_root):
    """A checkpoint written before an experiment option existed resumes when the option has its default
    value, and is refused when it does not."""
    exp = nbody(data_root, model="fa-gnn")
    fit(exp, cfg(tmp_path, epochs=1), seed=0)
    path = tmp_path / "runs" / "nbody" / "fa-gnn" / "seed0" / CHECKPOINT
    ckpt = torch.load(path, weights_only=False)
    del ckpt["experiment"]["config"]["fa_variant"]  # as written by an older version
    atomic_save(ckpt, path)
    assert fit(nbody(data_root, model="fa-gnn"), cfg(tmp_path, epochs=2, resume=True), seed=0).metrics["epochs_run"] == 2
    with pytest.raises(ValueError, match="fa_variant"):
        fit(nbody(data_root, model="fa-gnn", fa_variant="layerwise"),
            cfg(tmp_path, epochs=3, resume=True, name="fa-gnn"), seed=0)


# ------------------------------------------------------------------------------------------ resume / CLI paths
def test_resume_without_a_checkpoint_is_an_error_when_required(tmp_path, data_root):
    exp = nbody(data_root)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(exp, cfg(tmp_path, epochs=1, resume=True, require_checkpoint=True), seed=0)
    assert not (tmp_path / "runs" / "nbody" / "gnn" / "seed0").exists()
    # the library's resume=True alone continues or starts (as scripts use it)
    assert fit(exp, cfg(tmp_path, epochs=1, resume=True), seed=0).metrics["epochs_run"] == 1


def test_cli_resume_and_path_errors_are_one_line(tmp_path, data_root, capsys):
    from equiframe.cli import main  # noqa: PLC0415

    base = ["train", "nbody", "--model", "linear", "--epochs", "1", "--sims", "64", "32", "32", "--data-root",
            data_root, "--quiet", "--no-diagnostics"]
    out = str(tmp_path / "runs")
    assert main([*base, "--out", out, "--resume"]) == 2  # nothing to resume: an error, not a fresh start
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "--resume-or-start" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "nbody").exists()
    assert main([*base, "--out", out, "--resume-or-start"]) == 0  # starts
    assert main([*base, "--out", out, "--resume", "--epochs", "2"]) == 0  # continues
    assert json.loads((tmp_path / "runs" / "nbody" / "linear@egnn-small" / "seed0" / METRICS).read_text())[
        "epochs_run"] == 2
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    for argv, needle in [(["--out", str(tmp_path / "file" / "runs")], "--out"),
                         (["--out", out, "--data-root", str(tmp_path / "file")], "--data-root")]:
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_fit_leaves_global_state_alone(tmp_path):
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    fit(ToyExperiment(), cfg(tmp_path, epochs=1, threads=threads + 1), seed=0)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    # the run's own stream: the same result whatever the caller's global state
    torch.manual_seed(7)
    a = fit(ToyExperiment(), cfg(tmp_path, epochs=2, name="a"), seed=0).metrics["test"]
    torch.manual_seed(8)
    assert fit(ToyExperiment(), cfg(tmp_path, epochs=2, name="b"), seed=0).metrics["test"] == a


def test_compile_option_trains_to_the_same_result_or_falls_back(tmp_path, monkeypatch):
    """``compile=True`` without a working compiler warns and trains eagerly (bitwise the eager result)."""
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    eager = fit(ToyExperiment(), cfg(tmp_path, epochs=2, name="eager"), seed=0).metrics["test"]
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="compile"):
        res = fit(ToyExperiment(), cfg(tmp_path, epochs=2, name="nocc", compile=True), seed=0)
    assert res.metrics["test"] == eager


def test_optimizer_fused_and_foreach_agree(tmp_path, data_root):
    a = fit(nbody(data_root), cfg(tmp_path, epochs=2, name="fused"), seed=0).metrics["test"]["mse"]
    b = fit(nbody(data_root), cfg(tmp_path, epochs=2, name="foreach", optim=OptimConfig(fused=False)),
            seed=0).metrics["test"]["mse"]
    assert a == pytest.approx(b, rel=1e-4)
    with pytest.raises(TypeError, match="fused"):
        OptimConfig(fused="yes")


def test_compile_is_skipped_for_models_that_declare_they_do_not_support_it(tmp_path, data_root):
    exp = nbody(data_root, model="fa-gnn", fa_variant="layerwise", hidden=6, layers=2, diagnostic_samples=0)
    with pytest.warns(RuntimeWarning, match="supports_compile"):
        res = fit(exp, cfg(tmp_path, epochs=1, compile=True, name="c"), seed=0)
    assert res.metrics["test"] == fit(exp, cfg(tmp_path, epochs=1, name="e"), seed=0).metrics["test"]


# ------------------------------------------------------------------------------------------ learning-rate schedule
def test_cosine_schedule_values_and_bad_arguments():
    c = OptimConfig(lr=0.1, schedule="cosine", min_lr_ratio=0.1)
    lrs = [c.learning_rate(e, 10) for e in range(10)]
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0.01
    assert OptimConfig(lr=0.1).learning_rate(7, 10) == 0.1  # constant
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="step")
    with pytest.raises(ValueError, match="min_lr_ratio"):
        OptimConfig(schedule="cosine", min_lr_ratio=1.5)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        OptimConfig(schedule="cosine", min_lr_ratio=-0.1)


def test_cosine_schedule_is_applied_logged_and_resumes_identically(tmp_path):
    optim = OptimConfig(lr=0.05, schedule="cosine", min_lr_ratio=0.2)
    straight = fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=optim, name="straight"), seed=0)
    with open(straight.run_dir / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["lr"]) for r in rows] == pytest.approx([optim.learning_rate(e, 6) for e in range(6)])

    def kill(epoch, row):
        if epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=optim, name="resumed", checkpoint_every=2), seed=0,
            callback=kill)
    resumed = fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=optim, name="resumed", checkpoint_every=2,
                                       resume=True), seed=0)
    assert resumed.metrics["test"] == straight.metrics["test"]  # the schedule is a function of the epoch alone
    # a constant schedule and a cosine one train differently (the schedule is really applied)
    const = fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=OptimConfig(lr=0.05), name="const"), seed=0)
    assert const.metrics["test"] != straight.metrics["test"]


def test_anneal_from_values_and_bad_arguments():
    c = OptimConfig(lr=0.1, schedule="cosine", min_lr_ratio=0.1, anneal_from=4)
    lrs = [c.learning_rate(e, 10) for e in range(10)]
    assert lrs[:5] == [0.1] * 5  # constant before the decay starts, whose first epoch is the full rate
    plain = OptimConfig(lr=0.1, schedule="cosine", min_lr_ratio=0.1)
    assert lrs[4:] == pytest.approx([plain.learning_rate(e, 6) for e in range(6)])  # the decay over 10 - 4 epochs
    with pytest.raises(ValueError, match="anneal_from"):
        OptimConfig(anneal_from=3)  # a constant schedule has no annealing phase
    with pytest.raises(ValueError, match="anneal_from"):
        OptimConfig(schedule="cosine", anneal_from=-1)
    with pytest.raises(ValueError, match="anneal_from"):
        TrainConfig(epochs=4, optim=OptimConfig(schedule="cosine", anneal_from=4))


def test_constant_run_resumes_into_an_annealing_phase(tmp_path):
    """A run trained at a constant rate continues with a cosine decay that starts at or after its checkpoint
    (every epoch already trained keeps its rate), bitwise as if the whole schedule had been set from the start;
    a decay that would have changed epochs already trained is refused."""
    anneal = OptimConfig(lr=0.05, schedule="cosine", min_lr_ratio=0.1, anneal_from=3)
    straight = fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=anneal, name="straight"), seed=0)
    fit(ToyExperiment(), cfg(tmp_path, epochs=3, optim=OptimConfig(lr=0.05), name="two-phase"), seed=0)
    resumed = fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=anneal, name="two-phase", resume=True), seed=0)
    assert resumed.metrics["test"] == straight.metrics["test"]
    fit(ToyExperiment(), cfg(tmp_path, epochs=3, optim=OptimConfig(lr=0.05), name="early"), seed=0)
    for bad in (OptimConfig(lr=0.05, schedule="cosine", anneal_from=1), OptimConfig(lr=0.05, schedule="cosine")):
        with pytest.raises(ValueError, match="optim"):
            fit(ToyExperiment(), cfg(tmp_path, epochs=6, optim=bad, name="early", resume=True), seed=0)


def test_resume_on_another_data_cache(tmp_path, data_root):
    """Where the generated data are cached is not part of a run's identity: a run resumes on a machine with
    another cache directory (the data are deterministic and regenerated there)."""
    fit(nbody(data_root), cfg(tmp_path, epochs=2, name="moved"), seed=0)
    other = tmp_path / "other-cache"
    res = fit(nbody(str(other)), cfg(tmp_path, epochs=3, name="moved", resume=True), seed=0)
    assert res.metrics["epochs_run"] == 3
    with pytest.raises(ValueError, match="hidden"):  # a real difference is still refused
        fit(nbody(str(other), hidden=16), cfg(tmp_path, epochs=4, name="moved", resume=True), seed=0)

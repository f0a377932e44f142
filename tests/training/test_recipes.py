"""Recipes and the pieces they are made of: config precedence, label smoothing, EMA (with exact
resume), standardisation, and the seeds command — on real MNIST where they train."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import run_module, train_config
from ignite.engine import Events

from ignite_lenet.cmdline import explicit_options
from ignite_lenet.config_cli import config_from_args
from ignite_lenet.config import RECIPES, TrainConfig
from ignite_lenet.files import read_json
from ignite_lenet.model import LeNet5
from ignite_lenet.spec import BEST_MODEL, CONFIG, METRICS, TRAINING_CHECKPOINT
from ignite_lenet.train import get_args_parser, main
from ignite_lenet.training.notebook_baseline import notebook_loss
from ignite_lenet.training.job import build_training, train


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_recipe_sets_its_values_and_explicit_values_win(recipe):
    cfg = TrainConfig(recipe=recipe)
    for name, value in RECIPES[recipe].items():
        assert getattr(cfg, name) == value, name
    assert TrainConfig(recipe=recipe, epochs=7, lr=2e-3).epochs == 7
    assert TrainConfig(recipe=recipe, epochs=7, lr=2e-3).lr == 2e-3
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # config.json holds every resolved value


def test_the_default_recipe_is_the_notebooks():
    cfg = TrainConfig()
    assert cfg.recipe == "notebook" and (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == ("adam", 1e-3, 32, 15)
    assert (cfg.schedule, cfg.t_max, cfg.eta_min, cfg.augment, cfg.ema_decay, cfg.normalize, cfg.fast_tanh) == (
        "cosine", 2, 1e-5, False, 0.0, False, False)


def test_replace_with_another_recipe_brings_its_values_but_keeps_overrides():
    cfg = TrainConfig(epochs=3).replace(recipe="best")
    assert cfg.epochs == 3 and cfg.optimizer == "adamw" and cfg.ema_decay == RECIPES["best"]["ema_decay"]


def test_command_line_precedence_flags_then_file_then_recipe(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"recipe": "best", "epochs": 5, "lr": 5e-3}))
    parser = get_args_parser()
    argv = ["--config", str(path), "--lr", "1e-3", "--no-augment"]
    cfg = config_from_args(parser.parse_args(argv), explicit=explicit_options(parser, argv))
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.augment) == ("best", 5, 1e-3, False)
    assert cfg.weight_decay == RECIPES["best"]["weight_decay"]  # from the recipe named in the file
    argv = ["--recipe", "fast", "--epochs", "2"]
    cfg = config_from_args(parser.parse_args(argv), explicit=explicit_options(parser, argv))
    assert (cfg.recipe, cfg.epochs, cfg.batch_size) == ("fast", 2, RECIPES["fast"]["batch_size"])


@pytest.mark.parametrize("content, message", [
    ('{"epochs": 3, "epoch": 4}', "unknown setting"),
    ("[1, 2]", "JSON object"),
    ("{not json", "not valid JSON"),
    ('{"epochs": "many"}', "--epochs"),
    ('{"augment": "yes"}', "--augment"),
    ('{"recipe": "slow"}', "--recipe"),
    ('{"seed": 1e30}', "--seed"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["--config", str(path), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_label_smoothing_is_the_smoothed_cross_entropy_summed():
    logits, targets = torch.randn(8, 10), torch.randint(0, 10, (8,))
    expected = -(F.log_softmax(logits, 1) * (F.one_hot(targets, 10) * 0.9 + 0.01)).sum()
    torch.testing.assert_close(notebook_loss(0.1)(logits, targets), expected)
    torch.testing.assert_close(notebook_loss()(logits, targets), F.cross_entropy(logits, targets, reduction="sum"))


def test_ema_standardised_run_saves_a_plain_model_and_resumes_exactly(mnist_dir, mnist_data, tmp_path):
    flags = dict(epochs=3, epoch_length=60, batch_size=64, optimizer="adamw", weight_decay=0.05,
                 schedule="onecycle", lr=3e-3, ema_decay=0.99, normalize=True, augment=True, elastic=True,
                 label_smoothing=0.1, train_eval_size=1000, fast_tanh=True)
    reference = train(train_config(mnist_dir, tmp_path / "reference", **flags))
    history = reference.history
    assert set(history) == {"train", "val", "val_ema", "lr", "epoch_time_s"} and len(history["val_ema"]["loss"]) == 3
    best = torch.load(tmp_path / "reference" / BEST_MODEL, weights_only=True)
    assert best["weights"] in ("raw", "ema") and set(best["model"]) == set(LeNet5().state_dict())
    # the saved plain LeNet5 (standardisation folded in, torch.tanh instead of the training's SigmoidTanh)
    # reproduces the chosen weights' validation loss
    split = "val_ema" if best["weights"] == "ema" else "val"
    assert best["val_loss"] == pytest.approx(history[split]["loss"][best["epoch"] - 1])
    with torch.no_grad():
        loss = F.cross_entropy(reference.model(mnist_data.val.images), mnist_data.val.labels).item()
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)
    assert reference.metrics["test_accuracy"] > 0.8

    interrupted = train_config(mnist_dir, tmp_path / "interrupted", **flags)
    training = build_training(interrupted)
    training.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())
    training.trainer.run(training.loaders["train"], max_epochs=3)  # stops after epoch 2 (checkpoint written)
    training.close()  # its trainer was run directly, not through run(): give the run directory up to the resume
    finished = train(interrupted.replace(resume=True))
    a = torch.load(tmp_path / "reference" / TRAINING_CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "interrupted" / TRAINING_CHECKPOINT, weights_only=True)
    for key in ("model", "ema_model"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    strip = lambda h: {k: v for k, v in h.items() if k != "epoch_time_s"}  # noqa: E731
    assert strip(finished.history) == strip(history)


def test_seeds_command_trains_each_seed_and_summarises(mnist_dir, tmp_path):
    done = run_module("ignite_lenet.seeds", "--seeds", "0", "1", "--data-dir", str(mnist_dir), "--no-download",
                      "--recipe", "fast", "--epochs", "1", "--epoch-length", "30", "--output-dir", str(tmp_path),
                      "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = read_json(tmp_path / "seeds.json")
    accuracies = [r["test_accuracy"] for r in summary["runs"]]
    assert [r["seed"] for r in summary["runs"]] == [0, 1] and accuracies[0] != accuracies[1]
    assert summary["test_accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
    for seed, accuracy in zip((0, 1), accuracies):
        metrics = read_json(tmp_path / f"seed-{seed}" / METRICS)
        assert metrics["test_accuracy"] == accuracy
        assert read_json(tmp_path / f"seed-{seed}" / CONFIG)["seed"] == seed
    assert "mean test accuracy" in done.stdout
    bad = run_module("ignite_lenet.seeds", "--seeds", "1", "1", "--data-dir", str(mnist_dir))
    assert bad.returncode == 2 and "each seed once" in bad.stderr


def test_deterministic_run_trains_and_restores_torchs_global_flags(mnist_dir, tmp_path):
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    flags = dict(epochs=1, epoch_length=20, augment=True, elastic=True, ema_decay=0.9, normalize=True,
                 deterministic=True)
    first = train(train_config(mnist_dir, tmp_path / "a", **flags))
    second = train(train_config(mnist_dir, tmp_path / "b", **flags))
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    strip = lambda h: {k: v for k, v in h.items() if k != "epoch_time_s"}  # noqa: E731
    assert strip(first.history) == strip(second.history)
    assert read_json(tmp_path / "a" / CONFIG)["deterministic"] is True

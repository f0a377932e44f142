import pytest

from ignite_lenet.config import TrainConfig
from ignite_lenet.train import get_args_parser


def test_defaults_are_the_notebooks_recipe(monkeypatch):
    monkeypatch.delenv("IGNITE_LENET_DATA_DIR", raising=False)
    cfg = TrainConfig()
    assert (cfg.lr, cfg.batch_size, cfg.t_max, cfg.eta_min) == (1e-3, 32, 2, 1e-5)
    assert cfg.data_dir == "data" and cfg.download and cfg.output_dir == "runs/lenet5"


def test_parser_is_built_from_the_config(monkeypatch):
    monkeypatch.setenv("IGNITE_LENET_DATA_DIR", "/somewhere")
    args = get_args_parser().parse_args(["--epochs", "3", "--no-download", "--no-progress", "--patience", "2"])
    assert (args.epochs, args.download, args.progress, args.patience) == (3, False, False, 2)
    assert args.data_dir == "/somewhere" and args.lr == TrainConfig.__dataclass_fields__["lr"].default


def test_every_flag_has_help():
    for action in get_args_parser()._actions:
        assert action.help, action.option_strings


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": -1}, "--batch-size"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": float("inf")}, "--lr"),
        ({"eta_min": 1.0}, "--eta-min"),
        ({"val_size": 60000}, "--val-size"),
        ({"patience": 0}, "--patience"),
        ({"device": "tpu"}, "--device"),
        ({"schedule": "linear"}, "--schedule"),
        ({"nproc_per_node": 2}, "--backend"),
    ],
)
def test_invalid_settings_are_rejected_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**change)


def test_dict_roundtrip_ignores_unknown_keys():
    cfg = TrainConfig(epochs=4, seed=7)
    assert TrainConfig.from_dict({**cfg.to_dict(), "from_the_future": 1}) == cfg


def test_resume_and_overwrite_are_what_one_command_does_not_settings_of_the_run():
    """config.json and the checkpoints store ``to_dict()``: ``--config old/config.json`` must neither resume nor
    delete anything by itself."""
    for action in ("resume", "overwrite"):
        cfg = TrainConfig(**{action: True})
        assert action not in cfg.to_dict() and getattr(TrainConfig.from_dict(cfg.to_dict()), action) is False
    with pytest.raises(ValueError, match="--overwrite starts over; --resume continues"):
        TrainConfig(overwrite=True, resume=True)

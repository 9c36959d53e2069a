"""The `avlips` command reports bad input in one line naming it, with exit status 1, not a traceback."""

from __future__ import annotations

from avlips.cli import main


def test_render_of_a_missing_shard_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope-000000.tar"
    status = main(["render", "--shards", str(missing), "--key", "k", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert status == 1 and str(missing) in err and "Traceback" not in err


def test_detect_with_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, make_video):
    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    status = main(["detect", "--checkpoint", str(bad), str(make_video())])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"{bad}: not a readable PyTorch checkpoint" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------ -S overrides

import pytest
import yaml

from avlips.cli import build_parser
from avlips.cli_args import params_from_args, train_inputs, train_parser
from avlips.params import param

# Every subcommand with the arguments it cannot run without.
COMMANDS = [["corpus"], ["denoise"], ["synthesize"], ["compose"], ["perturb"], ["train"], ["evaluate"],
            ["generators", "list"], ["detectors", "list"], ["detect", "clip.mp4"], ["render", "--shards", "s.tar", "--key", "k", "--out", "x.png"]]


def _params(argv: list[str]) -> dict:
    args, _ = build_parser().parse_known_args(argv)
    return params_from_args(args)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_subcommand_takes_repeatable_dotted_overrides(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the package's defaults
    params = _params([*command, "-S", "seed=7", "-S", "compose.mel.n_mels=64", "-S", "perturb.levels=[1, 3]"])
    assert params["seed"] == 7 and params["compose"]["mel"]["n_mels"] == 64 and params["perturb"]["levels"] == [1, 3]
    assert params["compose"]["window_len"] == 5  # untouched keys keep their values


@pytest.mark.parametrize("argv, key, value", [
    (["compose", "--clips", "c.parquet"], "compose.clips", "c.parquet"),
    (["compose", "--audio", "a.parquet"], "compose.audio", "a.parquet"),
    (["compose", "--fakes", "f.parquet"], "compose.fakes", "f.parquet"),
    (["synthesize", "--clips", "c.parquet"], "synthesize.clips", "c.parquet"),
    (["synthesize", "--audio", "a.parquet"], "synthesize.audio", "a.parquet"),
    (["denoise", "--clips", "c.parquet"], "denoise.clips", "c.parquet"),
    (["perturb", "--clean", "shards"], "perturb.clean", "shards"),
    (["corpus", "--source", "folder:x"], "corpus.source", "folder:x"),
    (["corpus", "--workers", "3"], "beam.workers", 3),
    (["train", "--train-shards", "t-*.tar"], "train.train_shards", "t-*.tar"),
    (["train", "--model", "m.pt"], "train.model", "m.pt"),
    (["evaluate", "--model", "m.pt"], "detectors.lipfd.model", "m.pt"),
    (["evaluate", "--perturbed", "p"], "evaluate.perturbed", "p"),
    (["detect", "v.mp4", "--checkpoint", "m.pt"], "detectors.lipfd.model", "m.pt"),
])
def test_a_stage_input_flag_is_its_override(argv, key, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = value if isinstance(value, str) else str(value)
    by_flag, by_override = _params(argv), _params([argv[0], "-S", f"{key}={raw}"] + argv[1:2] * (argv[0] == "detect"))
    assert param(by_flag, key) == value == param(by_override, key)


def test_a_flag_wins_over_an_override_of_the_same_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _params(["compose", "--out", "flag", "-S", "compose.out=override"])["compose"]["out"] == "flag"


def test_a_partial_params_file_takes_the_package_defaults_for_the_rest(tmp_path):
    params_file = tmp_path / "mine.yaml"
    params_file.write_text(yaml.safe_dump({"compose": {"n_windows": 3},
                                           "synthesize": {"generators": {"audio_swap": {"enabled": True}}}}))
    params = _params(["compose", "--params", str(params_file)])
    assert params["compose"]["n_windows"] == 3 and params["compose"]["clips"] == "data/corpus/clips.parquet"
    # A mapping is taken whole from the user's file: the default generators are not mixed in.
    assert params["synthesize"]["generators"] == {"audio_swap": {"enabled": True}}
    assert _params(["--params", str(params_file), "compose"])["compose"]["n_windows"] == 3


def test_override_types_follow_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(["train", "-S", "train.lr=1", "-S", "train.weight_decay=1e-3", "-S", "denoise.win_length=512",
                      "-S", "synthesize.generators.wav2lip.checkpoint=w.pth"])
    assert params["train"]["lr"] == 1.0 and isinstance(params["train"]["lr"], float)  # an int is a float
    assert params["train"]["weight_decay"] == 0.001  # YAML 1.1 reads 1e-3 as text
    assert params["denoise"]["win_length"] == 512  # null in params accepts any value
    assert params["synthesize"]["generators"]["wav2lip"] == {"enabled": False, "checkpoint": "w.pth"}
    assert _params(["compose", "-S", "compose.fakes=null"])["compose"]["fakes"] is None  # null unsets a key


@pytest.mark.parametrize("override, words", [
    ("compose.n_window=4", ["unknown key 'compose.n_window'", "did you mean 'compose.n_windows'"]),
    ("steps=4", ["unknown key 'steps'", "did you mean", ".steps'"]),
    ("compose.n_windows=many", ["compose.n_windows", "expected int", "'many'"]),
    ("train.amp=true", ["train.amp", "expected str", "True"]),
    ("perturb.levels=3", ["perturb.levels", "expected list", "3"]),
    ("compose.mel=[1]", ["compose.mel", "expected dict"]),
    ("train.steps", ["expected KEY=VALUE"]),
    ("perturb.levels=[1, 2", ["not valid YAML"]),
])
def test_a_bad_override_is_one_line_exit_2_and_nothing_written(override, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "shards"
    assert main(["compose", "--out", str(out), "-S", override]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("avlips compose: ") and "Traceback" not in err
    for word in words:
        assert word in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_params_file_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--params", str(tmp_path / "none.yaml"), "corpus", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'none.yaml'}: no such params file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_train_and_the_module_entry_point_share_one_parser(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--train-shards", "t-{0..1}.tar", "--val-shards", "", "--model", "m.pt", "--metrics", "x.json",
            "--checkpoint-dir", "ck", "--resume", "auto", "-S", "train.steps=5", "-S", "seed=3"]
    via_cli, _ = build_parser().parse_known_args(["train", *argv])
    via_module = train_parser().parse_args(argv)
    inputs = [train_inputs(args, params_from_args(args)) for args in (via_cli, via_module)]
    assert inputs[0] == inputs[1]
    assert inputs[0].settings["steps"] == 5 and inputs[0].settings["seed"] == 3 and "model" not in inputs[0].settings
    assert (inputs[0].train_shards, inputs[0].val_shards, inputs[0].model, inputs[0].metrics,
            inputs[0].checkpoint_dir, inputs[0].resume) == ("t-{0..1}.tar", None, "m.pt", "x.json", "ck", "auto")


def test_the_module_entry_point_reports_a_bad_override_in_one_line(tmp_path, monkeypatch, capsys):
    from avlips.model.train import main as train_main

    monkeypatch.chdir(tmp_path)
    assert train_main(["-S", "train.stpes=5"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'train.steps'" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []

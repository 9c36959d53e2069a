"""A params file may hold only keys the package's params have (plugin blocks excepted): a typo is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avlips.cli import main
from avlips.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("data, key, closest", [
    ({"compose": {"windw_len": 5}}, "compose.windw_len", "compose.window_len"),
    ({"compose": {"mel": {"n_mel": 64}}}, "compose.mel.n_mel", "compose.mel.n_mels"),
    ({"perturb": {"level": [1]}}, "perturb.level", "perturb.levels"),
    ({"sync": {"step": 3}}, "sync.step", "sync.steps"),
    ({"compos": {"window_len": 5}}, "compos", "compose"),
])
def test_an_unknown_key_in_the_file_names_the_file_the_key_and_the_closest_known(data, key, closest, tmp_path):
    params_file = _write(tmp_path / "mine.yaml", data)
    with pytest.raises(ParamsError) as caught:
        load_params(params_file)
    message = str(caught.value)
    assert message.startswith(f"{params_file}: unknown key {key!r}")
    assert f"did you mean {closest!r}" in message


def test_the_cli_reports_an_unknown_file_key_in_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    params_file = _write(tmp_path / "mine.yaml", {"compose": {"windw_len": 5}})
    out = tmp_path / "shards"
    assert main(["--params", str(params_file), "compose", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "'compose.windw_len'" in err and "did you mean 'compose.window_len'" in err
    assert not out.exists()


def test_plugin_blocks_and_split_names_take_any_keys(tmp_path):
    data = {"synthesize": {"generators": {"my_generator": {"enabled": True, "anything": {"nested": 1}},
                                          "mouth_rewrite": {"enabled": True, "blend_width": 3}}},
            "detectors": {"my_detector": {"weights": "w.pt", "threshold": 0.3}, "sync": {"offsets": 7}},
            "corpus": {"splits": {"train": 0.8, "dev": 0.2}}}
    params = load_params(_write(tmp_path / "mine.yaml", data))
    assert params["synthesize"]["generators"]["my_generator"]["anything"] == {"nested": 1}
    assert params["detectors"]["my_detector"]["threshold"] == 0.3
    assert params["corpus"]["splits"] == {"train": 0.8, "dev": 0.2}


def test_the_repositorys_own_params_pass():
    params = load_params(REPO / "params.yaml")
    assert params["compose"]["window_len"] == 5


def test_an_override_and_the_file_share_the_open_blocks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the package's defaults
    params = load_params(None, ["detectors.my_detector.weights=w.pt", "corpus.splits.dev=0.1"])
    assert params["detectors"]["my_detector"] == {"weights": "w.pt"} and params["corpus"]["splits"]["dev"] == 0.1
    with pytest.raises(ParamsError, match="did you mean 'compose.window_len'"):
        load_params(None, ["compose.windw_len=5"])


def test_default_paths_are_params_yamls(tmp_path):
    """Each stage path is written once, in params.yaml: a detector built with no settings and train() use it."""
    import inspect

    from avlips.model.fused import FusedDetector
    from avlips.model.lipfd_detector import LipFDDetector
    from avlips.model.sync.detector import SyncDetector
    from avlips.model.train import TrainingRun, train

    repo = yaml.safe_load((REPO / "params.yaml").read_text())
    detectors = repo["detectors"]
    assert LipFDDetector().weights_path == detectors["lipfd"]["model"]
    assert SyncDetector().model_path == detectors["sync"]["model"]
    fused = FusedDetector()
    assert fused.calibration_path == detectors["fused"]["calibration"]
    assert fused.val_shards_pattern == detectors["fused"]["val_shards"]
    defaults = {name: p.default for name, p in inspect.signature(train).parameters.items()}
    assert (defaults["model_path"], defaults["metrics_path"]) == (repo["train"]["model"], repo["train"]["metrics"])
    assert inspect.signature(TrainingRun).parameters["model_path"].default == repo["train"]["model"]

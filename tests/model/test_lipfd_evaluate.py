"""The evaluate stage and single-video detection, on tiny shards and a tiny untrained model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from avlips.media.audio_decode import read_audio
from avlips.media.encode import write_video
from avlips.media.frames import iter_frames
from avlips.media.errors import NoFace, NotAVideo, TooShort
from avlips.media.windows import WindowConfig
from avlips.model.checkpoints import save_checkpoint
from avlips.model.lipfd import LipFDConfig, build_lipfd
from tests.pipelines.test_compose import _clip_row, _params, _talking

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Clean shards of 2 real + 2 fake clips, blur-perturbed shards, and a tiny saved model."""
    from avlips.pipelines.compose import run_compose
    from avlips.pipelines.perturb import run_perturb

    root = tmp_path_factory.mktemp("evaluate")
    clips = [_talking(root / f"c{i}.mp4", seed=i + 1, seconds=1.6, size=64) for i in range(4)]
    rows = [{**_clip_row(f"c{i}", p, f"id{i}", label=int(i >= 2)), "generator": "audio_swap" if i >= 2 else ""}
            for i, p in enumerate(clips)]
    params = _params(root, rows, n_windows=3, frame_size=64, samples_per_shard=6)
    run_compose(str(root / "clean"), params)
    run_perturb(str(root / "clean"), str(root / "perturbed"),
                {"perturb": {"types": ["gaussian_blur"], "levels": [1, 3]}})
    torch.manual_seed(0)
    config = LipFDConfig(encoder="vit-tiny", backbone="resnet18")
    model = build_lipfd(config)
    save_checkpoint(root / "model.pt", model, step=0, config=config,
                    extra={"train": {"input_mode": "reference_compatible", "crop_size": 32}})
    return root, clips


def test_evaluate_writes_the_report(built):
    from avlips.model.evaluate import run_evaluate

    root, _ = built
    report = run_evaluate(str(root / "model.pt"), str(root / "clean"), str(root / "perturbed"),
                          str(root / "reports"), {"evaluate": {"bootstrap_rounds": 20, "device": "cpu"}})
    samples = pd.read_parquet(root / "clean" / "samples.parquet")
    test_windows = int((samples.split == "test").sum())
    assert report["windows"] == 3 * test_windows  # clean + two blur levels
    assert report["clean"]["window"]["n"] == test_windows and report["clean"]["video"]["n"] == 4
    assert set(report["perturbations"]["gaussian_blur"]) == {"1", "3"}
    assert list(report["per_generator"]) == ["audio_swap"]
    assert report["model"]["crop_size"] == 32
    stored = json.loads((root / "reports" / "robustness.json").read_text())
    assert stored["windows"] == report["windows"]
    text = (root / "reports" / "robustness.md").read_text()
    assert "| gaussian_blur |" in text and "## Per generator" in text
    assert (root / "reports" / "plots" / "auc_by_level.png").exists()


def test_evaluate_without_shards_is_a_clear_error(tmp_path, built):
    from avlips.model.evaluate import EvaluateInputError, run_evaluate

    root, _ = built
    with pytest.raises(EvaluateInputError, match="no test-NNNNNN.tar"):
        run_evaluate(str(root / "model.pt"), str(tmp_path), "", str(tmp_path / "r"), {})
    with pytest.raises(EvaluateInputError, match="no such model"):
        run_evaluate(str(tmp_path / "absent.pt"), str(root / "clean"), "", str(tmp_path / "r"), {})


def test_detect_scores_each_window(built):
    from avlips.model.detect import detect, format_detection

    root, clips = built
    result = detect(str(clips[0]), checkpoint=str(root / "model.pt"), window=WindowConfig(n_windows=4, frame_size=64),
                    centred=True)
    assert len(result.windows) == 4 and not result.skipped
    scores = [w["score"] for w in result.windows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.probability == pytest.approx(float(np.mean(scores)))
    assert result.verdict in ("fake", "real")
    assert "clip probability of fake" in format_detection(result)


def test_detect_bad_inputs(built, tmp_path):
    from avlips.model.detect import detect

    root, clips = built
    model = str(root / "model.pt")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(NotAVideo):
        detect(str(tmp_path / "notes.mp4"), checkpoint=model, centred=True)
    frames = np.stack(list(iter_frames(clips[0])))
    write_video(tmp_path / "short.mp4", frames[:3], 25, read_audio(clips[0])[:2000], 16000)
    with pytest.raises(TooShort):
        detect(str(tmp_path / "short.mp4"), checkpoint=model, centred=True)
    write_video(tmp_path / "silent_track.mp4", frames, 25)
    with pytest.raises(Exception, match="no audio"):
        detect(str(tmp_path / "silent_track.mp4"), checkpoint=model, centred=True)
    grey = np.full((20, 96, 96, 3), 128, np.uint8)
    write_video(tmp_path / "noface.mp4", grey, 25, read_audio(clips[0])[:12800], 16000)
    with pytest.raises(NoFace):
        detect(str(tmp_path / "noface.mp4"), checkpoint=model)


def test_detect_cli_exit_codes(built, tmp_path):
    root, clips = built
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "avlips", "--params", str(tmp_path / "none.yaml")]
    (tmp_path / "none.yaml").write_text("compose: {n_windows: 3, frame_size: 64}\n")
    ok = subprocess.run(base + ["detect", str(clips[2]), "--checkpoint", str(root / "model.pt"), "--centred", "--json"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] in ("fake", "real")
    (tmp_path / "bad.mp4").write_text("nope")
    bad = subprocess.run(base + ["detect", str(tmp_path / "bad.mp4"), "--checkpoint", str(root / "model.pt")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "bad.mp4" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_detect_with_a_checkpoint_in_the_released_format(built, tmp_path):
    """The released LipFD file format (CLIP ViT-L/14 + ResNet-50, text tower included) scores a video."""
    from avlips.model.detect import detect

    listing = REPO.parent / "shared" / "reference" / "lipfd_state_dict.tsv"
    if not listing.exists():
        pytest.skip(f"{listing} not found")
    _, clips = built
    torch.manual_seed(0)
    model = build_lipfd(LipFDConfig(encoder="clip-vit-l14", backbone="resnet50"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for line in listing.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            if key not in state:  # the CLIP text tower, which detection does not use
                dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
                state[key] = torch.zeros(dims)
    del model
    torch.save({"model": state, "optimizer": {}, "total_steps": 1}, tmp_path / "released.pth")
    del state
    result = detect(str(clips[0]), checkpoint=str(tmp_path / "released.pth"),
                    window=WindowConfig(n_windows=2, frame_size=64), centred=True, batch_size=2)
    assert "reference" in result.model and len(result.windows) == 2
    assert all(0.0 <= w["score"] <= 1.0 for w in result.windows)


def test_an_unreadable_checkpoint_is_a_clear_error_of_the_command(tmp_path):
    """A broken model file: an input error naming it (the CLI prints it and exits 1), not a traceback."""
    from avlips.model.checkpoints import CheckpointError
    from avlips.model.evaluate import EvaluateInputError, load_detector

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    for name in ("notes.pt", "empty.pt", "list.pt", "other.pt"):
        with pytest.raises(EvaluateInputError, match=str(tmp_path / name)) as caught:
            load_detector(str(tmp_path / name), device="cpu")
        assert isinstance(caught.value, CheckpointError)  # still what callers of the model API catch
    with pytest.raises(EvaluateInputError, match="is a directory"):
        load_detector(str(tmp_path), device="cpu")
    (tmp_path / "none.yaml").write_text("{}\n")
    cli = subprocess.run([sys.executable, "-m", "avlips", "--params", str(tmp_path / "none.yaml"), "detect",
                          str(tmp_path / "notes.pt"), "--checkpoint", str(tmp_path / "notes.pt")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert cli.returncode == 1 and "notes.pt: not a readable PyTorch checkpoint" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_a_file_that_is_no_lipfd_checkpoint_is_an_error_naming_it(tmp_path):
    from avlips.model.checkpoints import CheckpointError
    from avlips.model.evaluate import load_detector

    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=f"{path}: reference checkpoint does not fit"):
        load_detector(str(path), device="cpu")

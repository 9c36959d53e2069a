"""The `sync` detector: the plugin contract, abstention on silence, the offset details, readiness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avlips.model.detectors import DetectorError, load_detector_plugin
from avlips.model.sync.curve import Calibration, OffsetCurve
from avlips.model.sync.detector import NO_SPEECH, SyncDetector
from avlips.model.sync.network import SyncNet, SyncNetConfig
from avlips.model.sync.weights import save_expert
from tests.model.sync_samples import talking_clip, window



@pytest.fixture(autouse=True)
def _one_thread():
    # On a shared CPU, one torch thread runs these tiny convolutions several times faster than two.
    torch.set_num_threads(1)

@pytest.fixture(scope="module")
def clip():
    return talking_clip(5, seconds=1.6, size=48)


@pytest.fixture(scope="module")
def expert_file(tmp_path_factory):
    torch.manual_seed(0)
    model = SyncNet(SyncNetConfig((2, 2, 4, 4, 8), face_size=48))
    path = tmp_path_factory.mktemp("sync") / "sync_expert.pt"
    save_expert(path, model, 5, {"calibration": {"center": -0.1, "scale": 0.05, "fitted_on": 10},
                                 "provenance": {"trained_on": "real only", "corpus_source": "demo", "synthetic": True}})
    return path


def test_scores_each_window_in_order_and_abstains_on_silence(expert_file, clip):
    detector = SyncDetector(model=str(expert_file), batch_size=2)
    assert detector.readiness().ready and "calibrated" in detector.readiness().reason
    samples = [window("c", *clip, 16, index=0), window("c", *clip, 0, index=1),
               window("c", *clip, 20, silent=True, index=2)]
    scores = list(detector.score(samples))
    assert [s.key for s in scores] == [s.key for s in samples]
    full, cut, silent = scores
    assert silent.abstained and silent.abstain_reason == NO_SPEECH and silent.probability is None
    for score in (full, cut):
        assert 0.0 <= score.probability <= 1.0
        assert {"best_offset", "confidence", "dist_at_0", "offsets_available"} <= set(score.details)
        assert -15 <= score.details["best_offset"] <= 15 and score.details["confidence"] >= 0
    assert full.details["offsets_available"] == 31 and cut.details["offsets_available"] < 31
    # The probability is the stored calibration applied to the margin.
    margin = full.details["sync_margin"]
    assert full.probability == pytest.approx(1 / (1 + np.exp(-(margin + 0.1) / 0.05)), rel=1e-4)
    assert detector.provenance()["trained_on"] == "real only"


def test_copies_of_a_window_with_the_same_audio_score_as_if_alone(expert_file, clip):
    clean = window("c", *clip, 16, index=0)
    darker = window("c", *clip, 16, index=1)
    darker.frames = (darker.frames * 0.6).astype(np.uint8)  # a perturbed copy: other frames, the same audio
    shared = SyncDetector(model=str(expert_file), batch_size=1)
    together = list(shared.score([clean, darker]))
    assert len(shared._audio_cache) == 1  # the audio was embedded once
    alone = list(SyncDetector(model=str(expert_file)).score([darker]))[0]
    assert together[1].probability == pytest.approx(alone.probability, abs=1e-9)
    assert together[1].details == alone.details and together[0].probability != together[1].probability


def test_a_sample_without_audio_is_an_error_naming_the_field(expert_file, clip):
    detector = SyncDetector(model=str(expert_file))
    with pytest.raises(DetectorError, match="lacks field 'audio.npy'"):
        list(detector.score([window("c", *clip, 16, with_audio=False)]))


def test_readiness_names_the_missing_weights_and_falls_back_to_a_released_file(tmp_path, expert_file):
    absent = tmp_path / "nope.pt"
    missing = SyncDetector(model=str(absent))
    assert not missing.readiness().ready and str(absent) in missing.readiness().reason
    released = tmp_path / "lipsync_expert.pth"
    state = {f"module.{k}": v for k, v in SyncNet(SyncNetConfig((2, 2, 4, 4, 8))).state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0}, released)
    fallback = SyncDetector(model=str(absent), expert_weights=str(released))
    assert fallback.readiness().ready and "uncalibrated" in fallback.readiness().reason
    assert fallback.provenance()["released"] is True
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00" * 64)
    reason = SyncDetector(model=str(broken)).readiness().reason
    assert str(broken) in reason and "\n" not in reason


def test_curve_numbers_and_the_calibration_map():
    curve = OffsetCurve(np.array([-2, -1, 0, 1, 2]), np.array([0.9, 0.5, 0.2, 0.6, 0.8]))
    assert curve.best_offset == 0 and curve.dist_at_0 == pytest.approx(0.2)
    assert curve.confidence == pytest.approx(0.6 - 0.2) and curve.sync_margin == pytest.approx(0.2 - 0.6)
    assert np.isnan(OffsetCurve(np.array([1, 2]), np.array([0.3, 0.4])).dist_at_0)
    calibration = Calibration.fit(np.linspace(-0.5, -0.1, 101))
    assert calibration.center == pytest.approx(-0.12) and calibration.fitted_on == 101
    assert calibration.probability(calibration.center) == pytest.approx(0.5)
    assert calibration.probability(-0.5) < 0.01 < 0.99 < calibration.probability(0.3)


def test_registered_as_a_detector_plugin(expert_file):
    detector = load_detector_plugin("sync", {"model": str(expert_file), "steps": 10, "lr": 0.1})
    assert isinstance(detector, SyncDetector) and detector.name == "sync"
    assert detector.reads == ("frames", "audio.npy")

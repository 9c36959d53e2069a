"""Evaluate with `perturb.materialize: false`: the cells made on the fly score as the materialised shards do."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from avlips.model.detectors import AUDIO, FRAMES, MEL, Detector, Readiness, WindowScore
from tests.builders import clip_row, compose_params, register_detectors, talking_clip

# A video type, the noise type (its own JPEG), an audio type (clean frame bytes, new mel) and the call (both).
PERTURB = {"types": ["gaussian_blur", "gaussian_noise", "mp3", "call"], "levels": [1, 4], "max_failure_fraction": 1.0}


class DigestDetector(Detector):
    """Scores a window by a digest of everything it decodes to: equal scores mean equal decoded windows."""

    name = "digest"
    version = "1"
    reads = (FRAMES, MEL, AUDIO)

    def readiness(self) -> Readiness:
        return Readiness(True, "no weights")

    def score(self, samples):
        for sample in samples:
            digest = hashlib.blake2b(digest_size=16)
            for part in (sample.frames, sample.mel_db, sample.audio):
                digest.update(b"-" if part is None else np.ascontiguousarray(part).tobytes())
            digest.update(json.dumps(sample.meta, sort_keys=True).encode())
            yield WindowScore(sample.key, int.from_bytes(digest.digest()[:4], "little") / 2**32,
                              details={"digest": digest.hexdigest()})


class PictureDigestDetector(DigestDetector):
    """The digest detector for windows that may lack audio.npy."""

    name = "picture_digest"
    reads = (FRAMES, MEL)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Clean test shards of 2 real + 2 fake clips (8 windows in 3 shards), their materialised perturbed cells,
    the stats of a perturb run that materialised nothing, and a tiny LipFD checkpoint."""
    from avlips.model.checkpoints import save_checkpoint
    from avlips.model.lipfd import LipFDConfig, build_lipfd
    from avlips.pipelines.compose import run_compose
    from avlips.pipelines.perturb import run_perturb

    root = tmp_path_factory.mktemp("on_the_fly")
    clips = [talking_clip(root / f"c{i}.mp4", seed=i + 1, seconds=1.2, size=64) for i in range(4)]
    rows = [{**clip_row(f"c{i}", p, f"id{i}", label=int(i >= 2)), "generator": "audio_swap" if i >= 2 else ""}
            for i, p in enumerate(clips)]
    run_compose(str(root / "clean"), compose_params(root, rows, n_windows=2, samples_per_shard=3))
    run_perturb(str(root / "clean"), str(root / "materialised"), {"perturb": PERTURB})
    run_perturb(str(root / "clean"), str(root / "none"), {"perturb": {**PERTURB, "materialize": False}})
    torch.manual_seed(0)
    config = LipFDConfig(encoder="vit-tiny", backbone="resnet18")
    save_checkpoint(root / "lipfd.pt", build_lipfd(config), step=0, config=config,
                    extra={"train": {"input_mode": "normalized", "crop_size": 32}})
    return root


def _evaluate(monkeypatch, root, perturbed: str, materialize: bool, detectors: list[str], **evaluate):
    """run_evaluate's report and the scored windows it was built from."""
    import avlips.model.report as report_module
    from avlips.model.evaluate import run_evaluate

    seen = {}
    build = report_module.build_detectors_report

    def keep_rows(rows, *args):
        seen.update(rows)
        return build(rows, *args)

    monkeypatch.setattr(report_module, "build_detectors_report", keep_rows)
    params = {"perturb": {**PERTURB, "materialize": materialize}, "detectors": {"lipfd": {"device": "cpu"}},
              "evaluate": {"bootstrap_rounds": 20, "detectors": detectors, **evaluate}}
    out = root / f"reports_{materialize}_{'_'.join(detectors)}_{len(evaluate)}"
    report = run_evaluate(str(root / "lipfd.pt"), str(root / "clean"), str(root / perturbed), str(out), params)
    return report, seen


def _same_report(materialised: dict, on_the_fly: dict) -> None:
    a, b = json.loads(json.dumps(materialised)), json.loads(json.dumps(on_the_fly))
    assert a["read"].pop("perturbed")["source"] == "materialised shards"
    assert b["read"].pop("perturbed") == {"source": "perturbed on the fly from the clean shards (perturb.materialize "
                                                    "false)", "cells": 8, "failures": 0}
    assert a == b


def test_cells_made_on_the_fly_decode_to_the_materialised_windows(monkeypatch, shards):
    register_detectors(monkeypatch, digest=DigestDetector)
    materialised, stored_rows = _evaluate(monkeypatch, shards, "materialised", True, ["digest"])
    on_the_fly, fly_rows = _evaluate(monkeypatch, shards, "none", False, ["digest"])
    stored, fly = stored_rows["digest"], fly_rows["digest"]
    assert len(stored) == 8 * (1 + 8) and materialised["read"]["samples"] == 72
    # The same windows in the same order (the bootstrap draws by position), decoded to the same arrays.
    assert [(r.perturbation, r.level, r.key, r.details["digest"]) for r in fly] == \
           [(r.perturbation, r.level, r.key, r.details["digest"]) for r in stored]
    assert {r.perturbation for r in fly} == {"none", *PERTURB["types"]}
    _same_report(materialised, on_the_fly)


def test_copies_with_the_clean_frame_bytes_take_its_decoded_frames_and_decode_the_same(monkeypatch, shards):
    import avlips.model.shard_samples as shard_samples

    register_detectors(monkeypatch, digest=DigestDetector)
    caches = []
    made = shard_samples.DecodedFrames

    def kept(max_bytes):
        caches.append(made(max_bytes))
        return caches[-1]

    monkeypatch.setattr(shard_samples, "DecodedFrames", kept)
    reused, reused_rows = _evaluate(monkeypatch, shards, "materialised", True, ["digest"])
    assert caches[-1].hits >= 8 * 2  # the mp3 cells' copies at both levels (and any other unchanged frames)
    decoded, decoded_rows = _evaluate(monkeypatch, shards, "materialised", True, ["digest"], decoded_frames_mb=0)
    assert caches[-1].hits == 0
    assert [r.details["digest"] for r in reused_rows["digest"]] == [r.details["digest"] for r in decoded_rows["digest"]]
    assert reused == decoded


def test_a_bad_decoded_frames_setting_is_an_error_before_any_work(monkeypatch, shards):
    from avlips.model.evaluate import EvaluateInputError

    register_detectors(monkeypatch, digest=DigestDetector)
    with pytest.raises(EvaluateInputError, match="evaluate.decoded_frames_mb must be an integer >= 0, got -1"):
        _evaluate(monkeypatch, shards, "materialised", True, ["digest"], decoded_frames_mb=-1)


@pytest.mark.slow
def test_lipfd_scores_on_the_fly_equal_the_materialised_shards_scores(monkeypatch, shards):
    register_detectors(monkeypatch, digest=DigestDetector)
    _, stored_rows = _evaluate(monkeypatch, shards, "materialised", True, ["lipfd", "digest"])
    _, fly_rows = _evaluate(monkeypatch, shards, "none", False, ["lipfd", "digest"])
    stored = {(r.perturbation, r.level, r.key): r.score for r in stored_rows["lipfd"]}
    fly = {(r.perturbation, r.level, r.key): r.score for r in fly_rows["lipfd"]}
    assert stored.keys() == fly.keys() and len(stored) == 72
    assert max(abs(stored[k] - fly[k]) for k in stored) < 1e-6
    assert len({round(v, 6) for v in stored.values()}) > 8  # the windows are told apart: a comparison, not constants


def test_params_that_say_materialised_over_a_run_that_wrote_no_shards_is_an_error(monkeypatch, shards):
    from avlips.model.evaluate import EvaluateInputError

    register_detectors(monkeypatch, digest=DigestDetector)
    with pytest.raises(EvaluateInputError, match=r"perturb_stats.json: the perturb stage wrote no shards"):
        _evaluate(monkeypatch, shards, "none", True, ["digest"])


def test_a_window_the_perturbation_refuses_is_counted_not_scored(monkeypatch, tmp_path, shards):
    """A clean window without audio.npy: the audio type refuses it on the fly as the perturb stage does."""
    from avlips.model.evaluate import run_evaluate
    from avlips.pipelines.perturb import run_perturb
    from avlips.pipelines.shards import iter_tar_samples, tar_bytes

    register_detectors(monkeypatch, picture_digest=PictureDigestDetector)
    clean = tmp_path / "clean"
    clean.mkdir()
    samples = list(iter_tar_samples(sorted((shards / "clean").glob("test-*.tar"))[0].read_bytes()))
    samples[0][1].pop("audio.npy")
    (clean / "test-000000.tar").write_bytes(tar_bytes(samples))
    perturb = {**PERTURB, "types": ["gaussian_blur", "mp3"]}
    stored = run_perturb(str(clean), str(tmp_path / "materialised"), {"perturb": perturb})
    assert stored["failures"] == 2  # mp3 at both levels
    reports = {}
    for materialize, perturbed in ((True, "materialised"), (False, "elsewhere")):
        params = {"perturb": {**perturb, "materialize": materialize},
                  "evaluate": {"bootstrap_rounds": 5, "detectors": ["picture_digest"]}}
        reports[materialize] = run_evaluate("", str(clean), str(tmp_path / perturbed), str(tmp_path / "r"), params)
    on_the_fly = reports[False]
    assert on_the_fly["read"]["perturbed"]["failures"] == 2
    windows = len(samples)  # clean, two blur levels, two mp3 levels without the window that has no audio
    assert on_the_fly["windows"] == reports[True]["windows"] == windows + 2 * windows + 2 * (windows - 1)
    assert on_the_fly["perturbations"] == reports[True]["perturbations"]


def test_materialised_cells_are_read_shard_by_shard_after_their_clean_shard(tmp_path):
    """Each clean shard, then the same shard of every cell: a window's copies come while its features are cached."""
    from avlips.model.evaluate import _chunks, _interleaved
    from avlips.model.shard_samples import ReadStats
    from tests.model.test_detectors import _sample, _write_shard

    def shards(folder: str, names: dict[str, list[str]]) -> list[str]:
        (tmp_path / folder).mkdir()
        return [_write_shard(tmp_path / folder / name, [_sample(key) for key in keys]) for name, keys in names.items()]

    sets = [("none", 0, shards("clean", {"test-000000.tar": ["a_w00", "a_w01", "b_w00"], "test-000001.tar": ["c_w00"]})),
            ("blur", 1, shards("blur1", {"test-000000.tar": ["a_w00_blur1", "b_w00_blur1"],
                                         "test-000001.tar": ["c_w00_blur1"]})),
            ("opus", 1, shards("opus1", {"test-000001.tar": ["c_w00_opus1"]}))]
    read = ReadStats()
    order = [(index, item.sample.key) for index, item in _interleaved(sets, read, frozenset({"b"}))]
    assert order == [(0, "a_w00"), (0, "a_w01"), (1, "a_w00_blur1"), (0, "c_w00"), (1, "c_w00_blur1"),
                     (2, "c_w00_opus1")]
    assert (read.samples, read.excluded_samples) == (6, 2)
    # Batches never mix shards or sets.
    batches = list(_chunks(iter(_interleaved(sets, ReadStats(), frozenset())), 2,
                           group=lambda entry: (entry[0], entry[1].shard)))
    assert [[key for _, item in batch for key in [item.sample.key]] for batch in batches] == [
        ["a_w00", "a_w01"], ["b_w00"], ["a_w00_blur1", "b_w00_blur1"], ["c_w00"], ["c_w00_blur1"], ["c_w00_opus1"]]

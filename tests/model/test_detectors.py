"""The detector plugins: registry and settings, LipFD behind the contract, the fused rule, the listing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from avlips.media.sample import WindowSample
from avlips.model.detectors import AUDIO, FRAMES, Detector, DetectorError, Readiness, WindowScore
from tests.builders import register_detectors


def _sample(key: str, label: int = 0, audio: bool = True) -> WindowSample:
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    meta = {"clip": key.split("_")[0], "window": 0, "mel_db_min": -80.0, "mel_db_max": 0.0}
    return WindowSample(key, rng.integers(0, 255, (5, 8, 8, 3), dtype=np.uint8),
                        rng.normal(-40, 10, (128, 4)).astype(np.float32), label, meta,
                        audio=rng.integers(-3000, 3000, 4000).astype(np.int16) if audio else None)


def _write_shard(path, samples) -> str:
    from avlips.pipelines.shards import tar_bytes

    path.write_bytes(tar_bytes((s.key, s.encode()) for s in samples))
    return str(path)


def _table_detector(name: str, table: dict, weights: str = ""):
    """A test-only detector whose probability per key is looked up (None: abstain)."""

    class Table(Detector):
        reads = (FRAMES,)
        calls = 0

        def __init__(self) -> None:
            if weights:
                self.weights_path = weights

        def readiness(self):
            return Readiness(True)

        def score(self, samples):
            type(self).calls += 1
            for sample in samples:
                p = table[sample.key]
                yield WindowScore(sample.key, p, "" if p is not None else "no speech")

    Table.name, Table.version = name, "1"
    return Table


def test_lipfd_is_installed_and_says_why_it_is_not_ready(tmp_path):
    from avlips.model.detector_set import build_detectors, format_detector_table, list_detectors

    built = build_detectors(["lipfd"], {"detectors": {"lipfd": {"model": str(tmp_path / "absent.pt")}}})
    lipfd = built["lipfd"]
    assert (lipfd.name, lipfd.reads, lipfd.trainable) == ("lipfd", ("frames", "mel.npy"), True)
    readiness = lipfd.readiness()
    assert not readiness.ready and "absent.pt: no such model checkpoint" in readiness.reason
    (tmp_path / "cut.pt").write_bytes(b"\x80\x02 cut")
    readiness = build_detectors(["lipfd"], {"detectors": {"lipfd": {"model": str(tmp_path / "cut.pt")}}})[
        "lipfd"].readiness()
    assert not readiness.ready and "cut.pt" in readiness.reason
    with pytest.raises(DetectorError, match="detectors.lipfd: .*checkpoint"):
        build_detectors(["lipfd"], {"detectors": {"lipfd": {"checkpoint": "x.pt"}}})
    with pytest.raises(DetectorError, match="no detector named 'nope'"):
        build_detectors(["nope"], {})
    listing = {d.name: d for d in list_detectors({"detectors": {"lipfd": {"model": str(tmp_path / "absent.pt")}}})}
    assert not listing["lipfd"].ready and listing["lipfd"].version == "1"
    assert "fused" in listing and not listing["fused"].ready  # its members are not all there
    table = format_detector_table(list(listing.values()))
    assert table.splitlines()[0].split() == ["name", "version", "reads", "ready", "why"]
    assert any(line.startswith("lipfd") and " no " in line and "absent.pt" in line for line in table.splitlines())


def test_a_detector_asked_for_a_field_a_sample_lacks_names_shard_sample_and_field():
    detector = _table_detector("needs_audio", {})()
    type(detector).reads = (FRAMES, AUDIO)
    detector.check_fields(_sample("a_w00"), "val-000000.tar")
    with pytest.raises(DetectorError, match=r"val-000000.tar: sample a_w00 lacks field 'audio.npy'.*needs_audio"):
        detector.check_fields(_sample("a_w00", audio=False), "val-000000.tar")


def _fused(tmp_path, members: dict, **settings):
    from avlips.model.fused import FusedDetector

    fused = FusedDetector(members=list(members), calibration=str(tmp_path / "cal.json"),
                          val_shards=str(tmp_path / "val-*.tar"), **{"min_real_windows": 5, **settings})
    fused.bind(members)
    return fused


def test_fused_rule_is_fixed_on_real_validation_windows(tmp_path):
    from avlips.model.fused import logit, normal_cdf

    rng = np.random.default_rng(0)
    reals = [f"r{i}_w00" for i in range(200)]
    fakes = [f"f{i}_w00" for i in range(50)]
    # a: separates fakes f0..f24 (visual traces), b: f25..f49 (out of sync); reals score low on both.
    a = {k: float(rng.uniform(0.05, 0.3)) for k in reals}
    b = {k: float(rng.uniform(0.2, 0.6)) for k in reals}
    for i, key in enumerate(fakes):
        a[key] = 0.95 if i < 25 else float(rng.uniform(0.05, 0.3))
        b[key] = 0.99 if i >= 25 else float(rng.uniform(0.2, 0.6))
    b[reals[0]] = None  # b abstains there
    fused = _fused(tmp_path, {"a": _table_detector("a", a)(), "b": _table_detector("b", b)()}, real_fpr=0.1)
    keys = reals + fakes
    labels = [0] * len(reals) + [1] * len(fakes)
    samples = [_sample(k, label) for k, label in zip(keys, labels)]
    scores = {name: list(d.score(samples)) for name, d in fused.detectors.items()}
    calibration = fused.fit(scores, labels, [str(tmp_path / "val-000000.tar")])
    assert calibration.members["a"].real_windows == 200 and calibration.members["b"].real_windows == 199
    assert calibration.members["a"].mean == pytest.approx(np.mean([logit(a[k]) for k in reals]))
    assert calibration.members["a"].scale == pytest.approx(np.std([logit(a[k]) for k in reals]))
    combined = [fused.combine(k, {n: s[i] for n, s in scores.items()}) for i, k in enumerate(keys)]
    real_p = np.array([c.probability for c in combined[:200]])
    assert 0.08 <= float(np.mean(real_p >= 0.5)) <= 0.11  # the operating point: 10% of real validation windows
    assert all(c.probability > 0.5 for c in combined[200:])  # each kind of fake caught by its detector
    # b abstained on reals[0]: its verdict is a's calibrated evidence alone.
    only_a = (logit(a[reals[0]]) - calibration.members["a"].mean) / calibration.members["a"].scale
    assert combined[0].probability == pytest.approx(normal_cdf(only_a - calibration.threshold))
    assert combined[0].details["members"]["b"]["abstain_reason"] == "no speech"
    # Both scored: Stouffer's sum, so evidence from both members adds up.
    z = {n: (logit(p[keys[-1]]) - calibration.members[n].mean) / calibration.members[n].scale
         for n, p in (("a", a), ("b", b))}
    assert combined[-1].details["evidence"] == pytest.approx((z["a"] + z["b"]) / np.sqrt(2))
    both = fused.combine("x", {"a": WindowScore("x", None, "too dark"), "b": WindowScore("x", None, "no speech")})
    assert both.abstained and "a: too dark" in both.abstain_reason and "b: no speech" in both.abstain_reason


def test_fused_calibration_is_stored_and_reused_only_for_the_same_weights_and_shards(tmp_path):
    reals = [f"r{i}_w00" for i in range(8)]
    shard = _write_shard(tmp_path / "val-000000.tar", [_sample(k) for k in reals] + [_sample("f0_w00", 1)])
    table = {k: 0.1 + 0.05 * i for i, k in enumerate(reals)} | {"f0_w00": 0.9}
    (tmp_path / "a.pt").write_bytes(b"weights of a")
    A, B = _table_detector("a", table, str(tmp_path / "a.pt")), _table_detector("b", dict(table))
    fused = _fused(tmp_path, {"a": A(), "b": B()})
    assert fused.readiness().ready and "calibrates on first use" in fused.readiness().reason
    first = fused.calibrate()
    assert A.calls == 1 and first.real_windows == 8 and first.val_shards == [["val-000000.tar", len(open(shard, "rb").read())]]
    stored = json.loads((tmp_path / "cal.json").read_text())
    assert stored["members"]["a"]["weights_sha256"] and stored["rule"].startswith("each member's logit")
    again = _fused(tmp_path, {"a": A(), "b": B()})
    assert "threshold" in again.readiness().reason
    assert again.calibrate() == first and A.calls == 1  # reused, nothing scored
    (tmp_path / "a.pt").write_bytes(b"other weights")
    retrained = _fused(tmp_path, {"a": A(), "b": B()})
    retrained.calibrate()
    assert A.calls == 2  # computed again: the weights changed
    gone = _fused(tmp_path, {"a": A(), "b": B()}, real_fpr=0.2)
    (tmp_path / "val-000000.tar").unlink()
    assert not gone.readiness().ready and "no validation shards" in gone.readiness().reason
    with pytest.raises(DetectorError, match="no validation shards"):
        gone.calibrate()


def test_fused_settings_are_checked(tmp_path):
    from avlips.model.fused import FusedDetector

    with pytest.raises(DetectorError, match="real_fpr"):
        FusedDetector(real_fpr=1.5)
    with pytest.raises(DetectorError, match="members"):
        FusedDetector(members=["lipfd", "lipfd"])
    assert not FusedDetector().readiness().ready  # no members bound


def test_combining_detectors_get_their_members_built_once_and_shared(monkeypatch, tmp_path):
    from avlips.model.detector_set import build_detectors, default_detector

    (tmp_path / "a.pt").write_bytes(b"a")
    register_detectors(monkeypatch, a=_table_detector("a", {}, str(tmp_path / "a.pt")), b=_table_detector("b", {}))
    params = {"detectors": {"fused": {"members": ["a", "b"], "calibration": str(tmp_path / "c.json")}}}
    built = build_detectors(["fused", "a"], params)
    assert set(built) == {"a", "b", "fused"} and built["fused"].detectors["a"] is built["a"]
    assert default_detector(params) == "lipfd"  # b names no weights file
    B = _table_detector("b", {})
    B.weights_path = lambda self: str(tmp_path / "a.pt")  # a method naming the file, as the sync detector has
    register_detectors(monkeypatch, a=_table_detector("a", {}, str(tmp_path / "a.pt")), b=B)
    assert default_detector(params) == "fused"


def test_training_provenance_records_corpus_generators_and_shard_hashes(tmp_path):
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from avlips.model.provenance import provenance_warnings, training_provenance

    shards = [_write_shard(tmp_path / f"train-00000{i}.tar", [_sample(f"c{i}_w00", i % 2)]) for i in range(2)]
    val = _write_shard(tmp_path / "val-000000.tar", [_sample("v_w00")])
    pq.write_table(pa.table({"shard": ["train-000000", "train-000001", "val-000000"], "label": [0, 1, 1],
                             "generator": ["", "mouth_rewrite", "audio_swap"]}), tmp_path / "samples.parquet")
    unknown = training_provenance(shards, val)
    assert unknown["synthetic"] is None and "do not say which corpus" in unknown["corpus"]["note"]
    (tmp_path / "compose_stats.json").write_text(json.dumps({"corpus": {"sources": ["demo"]}}))
    record = training_provenance(str(tmp_path / "train-{000000..000001}.tar"), val)
    assert record["synthetic"] is True and record["corpus"]["sources"] == ["demo"]
    assert record["generators"] == ["mouth_rewrite"]  # audio_swap is only in the validation shard
    assert [r["name"] for r in record["train_shards"]] == ["train-000000.tar", "train-000001.tar"]
    assert record["train_shards"][0]["sha256"] == hashlib.sha256(open(shards[0], "rb").read()).hexdigest()
    assert record["val_shards"][0]["name"] == "val-000000.tar"
    assert "synthetic demo corpus" in provenance_warnings(record)[0]
    (tmp_path / "compose_stats.json").write_text(json.dumps({"corpus": {"sources": ["folder"]}}))
    real = training_provenance(shards)
    assert real["synthetic"] is False and provenance_warnings(real) == []
    # A combination: each member's own provenance, each warned about by name.
    warnings = provenance_warnings({"lipfd": record, "sync": real})
    assert len(warnings) == 1 and warnings[0].startswith("lipfd: this model was trained on the synthetic demo")
    assert "does not record" in provenance_warnings({})[0]

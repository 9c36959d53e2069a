"""The `fused` detector: one verdict from several detectors, by a rule fixed on validation data only.

Each member's score is calibrated against the real windows of the validation split (clean shards,
never the test split): its logit, as a z-score over the logits those real windows got (mean and
standard deviation), says how unusual a window is for a real one by that detector. The members that
scored a window are combined as Stouffer's method combines independent tests: the sum of their z over
the square root of their count. A fake that one detector catches far out stands out still, and a fake
that both find somewhat unusual (mouth_rewrite: visual traces and a slightly wrong sync) adds up; the
threshold is the (1 - real_fpr) quantile of that evidence over the same real validation windows, and
the fused probability is Phi(evidence - threshold): 0.5 sits at that operating point. A member that
abstains on a window is left out of its sum; when every member abstains, fused abstains too.

Why this rule (chosen on the validation split, whose fakes are mouth_rewrite only; demo of
2026-12-07): the largest robust z (median, MAD) reached window AUC 0.904 there, the largest plain z
0.941, Stouffer's sum 0.960. The sync expert's logits over real windows are heavy-tailed (MAD spread
0.93 against a standard deviation of 2.0): a spread from the MAD makes a real window in that tail look
as unusual as a fake, so the standard deviation is the spread used.

The calibration is stored (`calibration`, JSON) with what it was computed from: each member's name,
version and weights' sha256, and the validation shards. It is reused only while all of these match;
otherwise it is computed again from `val_shards`.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from avlips.media.checksums import file_sha256
from avlips.media.sample import WindowSample
from avlips.model.detectors import Detector, DetectorError, Readiness, WindowScore
from avlips.params import default_param

log = logging.getLogger("avlips.fused")

CALIBRATION_VERSION = 2  # 1: largest robust z (median, MAD); 2: Stouffer over mean/sd z
_LOGIT_CLIP = 1e-6  # probabilities of exactly 0 or 1 have no logit
_MIN_SCALE = 1e-3  # a member whose real windows all score alike: its spread floored, not zero

RULE = ("each member's logit as a z-score (mean, standard deviation) over the real validation windows; the "
        "members that scored combined by Stouffer's method (sum of z / sqrt(count)); fused probability = "
        "Phi(evidence - threshold), threshold = the (1 - real_fpr) quantile of the evidence over the real "
        "validation windows")


@dataclass(frozen=True)
class MemberCalibration:
    """Where a member's scores of real validation windows lie."""

    version: str
    weights_sha256: str
    mean: float  # of the logits of the real validation windows it scored
    scale: float  # their standard deviation
    real_windows: int


@dataclass(frozen=True)
class Calibration:
    """The fitted rule and what it was fitted on."""

    members: dict[str, MemberCalibration]
    threshold: float
    real_fpr: float
    real_windows: int  # real validation windows at least one member scored
    val_shards: list[list]  # [file name, size] each

    def to_dict(self) -> dict:
        return {"version": CALIBRATION_VERSION, "rule": RULE, "threshold": self.threshold, "real_fpr": self.real_fpr,
                "real_windows": self.real_windows, "val_shards": self.val_shards,
                "members": {name: asdict(member) for name, member in self.members.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Calibration":
        return cls(members={name: MemberCalibration(**value) for name, value in data["members"].items()},
                   threshold=float(data["threshold"]), real_fpr=float(data["real_fpr"]),
                   real_windows=int(data["real_windows"]), val_shards=[list(v) for v in data["val_shards"]])


def logit(probability: float) -> float:
    p = min(max(float(probability), _LOGIT_CLIP), 1.0 - _LOGIT_CLIP)
    return math.log(p / (1.0 - p))


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))



def weights_file(detector: Detector) -> str:
    """The file a detector's weights come from: its `weights_path` (an attribute, or a method), '' when none."""
    path = getattr(detector, "weights_path", "") or ""
    return str((path() if callable(path) else path) or "")


def weights_sha256(detector: Detector) -> str:
    """The sha256 of the file a detector's weights come from, '' when it names none."""
    path = weights_file(detector)
    return file_sha256(path) if path and os.path.isfile(path) else ""


def shard_fingerprint(shards: Sequence[str]) -> list[list]:
    return [[os.path.basename(s), os.path.getsize(s) if os.path.isfile(s) else None] for s in shards]


class FusedDetector(Detector):
    """LipFD and sync (or any members) combined by a rule fixed on the real validation windows."""

    name = "fused"
    version = "1"
    reads = ()  # the union of its members', set when they are bound

    def __init__(self, members: Sequence[str] = ("lipfd", "sync"),
                 calibration: str = default_param("detectors.fused.calibration"),
                 val_shards: str = default_param("detectors.fused.val_shards"), real_fpr: float = 0.05,
                 min_real_windows: int = 20) -> None:
        if not members or len(set(members)) != len(members) or "fused" in members:
            raise DetectorError(f"detectors.fused.members: distinct detectors other than fused, got {list(members)}")
        if not 0.0 < float(real_fpr) < 1.0:
            raise DetectorError(f"detectors.fused.real_fpr must be in (0, 1), got {real_fpr}")
        self.members = tuple(members)
        self.calibration_path = str(calibration)
        self.val_shards_pattern = str(val_shards)
        self.real_fpr = float(real_fpr)
        self.min_real_windows = int(min_real_windows)  # fewer cannot place a centre, a spread and a quantile
        self.detectors: dict[str, Detector] = {}
        self.calibration: Calibration | None = None

    def bind(self, detectors: Mapping[str, Detector]) -> None:
        """The member detectors (built with their own settings), shared with whoever else scores with them."""
        missing = [m for m in self.members if m not in detectors]
        if missing:
            raise DetectorError(f"fused: member detector(s) {missing} not built")
        self.detectors = {m: detectors[m] for m in self.members}
        self.reads = tuple(dict.fromkeys(f for d in self.detectors.values() for f in d.reads))

    # -- readiness and calibration

    def val_shards(self) -> list[str]:
        """The validation shards the calibration comes from (a glob, or a list separated by '::')."""
        found: list[str] = []
        for pattern in self.val_shards_pattern.split("::"):
            found += sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        return [path for path in found if path]

    def readiness(self) -> Readiness:
        if not self.detectors:
            return Readiness(False, "members not bound (build it with avlips.model.detector_set.build_detectors)")
        for name, detector in self.detectors.items():
            ready = detector.readiness()
            if not ready.ready:
                return Readiness(False, f"member {name} not ready: {ready.reason}")
        stored = self._stored()
        if stored is not None:
            return Readiness(True, f"calibration {self.calibration_path} (threshold {stored.threshold:.3f} "
                                   f"at {stored.real_fpr:.0%} real FPR on {stored.real_windows} validation windows)")
        shards = self.val_shards()
        if not shards or not all(os.path.isfile(s) for s in shards):
            return Readiness(False, f"no calibration matching the members at {self.calibration_path}, and no "
                                    f"validation shards at {self.val_shards_pattern} to compute it")
        return Readiness(True, f"calibrates on first use from {len(shards)} validation shard(s)")

    def _stored(self) -> Calibration | None:
        """The stored calibration when it was made from these members' weights and these shards."""
        if not os.path.isfile(self.calibration_path):
            return None
        try:
            with open(self.calibration_path, encoding="utf-8") as handle:
                data = json.load(handle)
            stored = Calibration.from_dict(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable calibration, computing it again (%s)", self.calibration_path, exc)
            return None
        if data.get("version") != CALIBRATION_VERSION or set(stored.members) != set(self.members):
            return None
        if stored.real_fpr != self.real_fpr or stored.val_shards != shard_fingerprint(self.val_shards()):
            return None
        for name, detector in self.detectors.items():
            member = stored.members[name]
            if member.version != detector.version or member.weights_sha256 != weights_sha256(detector):
                return None
        return stored

    def fit(self, member_scores: Mapping[str, Sequence[WindowScore]], labels: Sequence[int],
            val_shards: Sequence[str]) -> Calibration:
        """The rule from the members' scores of the validation windows (only the real ones are used)."""
        real = [i for i, label in enumerate(labels) if int(label) == 0]
        members: dict[str, MemberCalibration] = {}
        for name in self.members:
            scores = member_scores[name]
            logits = np.array([logit(scores[i].probability) for i in real if not scores[i].abstained])
            if len(logits) < self.min_real_windows:
                raise DetectorError(f"fused: member {name} scored {len(logits)} real validation windows in "
                                    f"{len(val_shards)} shard(s) ({self.val_shards_pattern}), fewer than "
                                    f"detectors.fused.min_real_windows={self.min_real_windows} to calibrate on")
            mean, scale = float(np.mean(logits)), max(float(np.std(logits)), _MIN_SCALE)
            members[name] = MemberCalibration(self.detectors[name].version, weights_sha256(self.detectors[name]),
                                              mean, scale, int(len(logits)))
        provisional = Calibration(members, 0.0, self.real_fpr, 0, shard_fingerprint(val_shards))
        evidence = [e for e in (self._evidence({m: member_scores[m][i] for m in self.members}, provisional)
                                for i in real) if e is not None]
        threshold = float(np.quantile(evidence, 1.0 - self.real_fpr))
        self.calibration = Calibration(members, threshold, self.real_fpr, len(evidence), provisional.val_shards)
        return self.calibration

    def save_calibration(self) -> None:
        assert self.calibration is not None
        directory = os.path.dirname(self.calibration_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = f"{self.calibration_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.calibration.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, self.calibration_path)

    def calibrate(self, recompute: bool = False) -> Calibration:
        """The stored calibration when it matches, else one computed from the validation shards (and stored).

        `recompute`: compute and store it whatever is stored (evaluate does, so its report and the
        stored rule come from the same pass).
        """
        if self.calibration is not None and not recompute:
            return self.calibration
        stored = None if recompute else self._stored()
        if stored is not None:
            self.calibration = stored
            return stored
        from avlips.model.shard_samples import iter_shard_samples

        shards = self.val_shards()
        missing = [s for s in shards if not os.path.isfile(s)]
        if not shards or missing:
            raise DetectorError(f"fused: no validation shards at {self.val_shards_pattern} to calibrate on "
                                f"({missing[0] if missing else 'none match'})")
        samples = [item.sample for item in iter_shard_samples(shards)]
        scores = {name: list(detector.score(samples)) for name, detector in self.detectors.items()}
        self.fit(scores, [s.label for s in samples], shards)
        self.save_calibration()
        return self.calibration

    # -- scoring

    def _evidence(self, scores: Mapping[str, WindowScore], calibration: Calibration) -> float | None:
        zs = [(logit(score.probability) - calibration.members[name].mean) / calibration.members[name].scale
              for name, score in scores.items() if not score.abstained]
        return sum(zs) / math.sqrt(len(zs)) if zs else None

    def combine(self, key: str, scores: Mapping[str, WindowScore]) -> WindowScore:
        """One window's fused verdict from its members' verdicts."""
        calibration = self.calibrate()
        evidence = self._evidence(scores, calibration)
        details: dict = {"members": {name: {"probability": s.probability, "abstain_reason": s.abstain_reason,
                                            **s.details} for name, s in scores.items()}}
        if evidence is None:
            reasons = "; ".join(f"{name}: {s.abstain_reason}" for name, s in scores.items())
            return WindowScore(key, None, f"every member abstained ({reasons})", details)
        details["evidence"] = evidence
        return WindowScore(key, normal_cdf(evidence - calibration.threshold), "", details)

    def score(self, samples: Iterable[WindowSample]) -> Iterator[WindowScore]:
        samples = list(samples)
        self.calibrate()
        per_member = {name: list(detector.score(samples)) for name, detector in self.detectors.items()}
        for index, sample in enumerate(samples):
            yield self.combine(sample.key, {name: scores[index] for name, scores in per_member.items()})

    def provenance(self) -> dict:
        return {name: detector.provenance() for name, detector in self.detectors.items()}

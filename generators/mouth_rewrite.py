"""Mouth rewrite: a Video-Rewrite-style lip-sync without weights, built from the target's own mouths.

The target's mouth crops (aligned to its smoothed face box, one per frame) form a bank, each keyed by
audio features of the target's own speech at that frame's time. The output is a path through the bank,
chosen by dynamic programming (Viterbi) over
  - the distance between each bank mouth's audio key and the driving audio at that output frame;
  - the kind of each transition: continuing the take the previous mouth came from is free, holding
    a mouth costs a little, jumping to another part of the bank costs more, and a jump may only come
    min_run frames after the previous one (units of a few frames, like Video Rewrite's triphones);
  - how much the mouth visibly changes in each transition (grey-level distance between bank crops,
    0 for a hold, the natural change for a continuation) against how much it should change there:
    the driving audio's loudness, ranked within the clip, mapped onto the spread of the target's own
    frame-to-frame mouth changes. A mouth moves while speaking and rests in silence; jumps land on
    mouths that differ from the last by about as much as a real mouth changes at that loudness.
Each chosen mouth is warped onto the face and blended in with a feathered ellipse after colour
matching. Pixels outside the ellipse are the target's own.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from avlips.config import config_from_dict
from avlips.generators.base import VIDEO, DrivingAudio, GenerationResult, GeneratorError, LipGenerator, Target
from avlips.generators.registry_cli import STAGE_KEYS

__all__ = [
    "DEFAULTS",
    "MouthRewrite",
    "MouthRewriteSettings",
    "RewritePlan",
    "Composite",
    "audio_features",
    "select_path",
    "loudness_at",
    "mouth_activity",
]

FEATURE_RATE = 16000  # audio is analysed at 16 kHz, the rate driving audio arrives at
_HOP = FEATURE_RATE // 100  # 10 ms analysis columns: several per video frame at any usual fps
_N_FFT = 512  # 32 ms window: resolves formants without smearing syllables
_CROP_MARGIN = 1.05  # bank crops reach a little past the blend ellipse so warping never samples a border


@dataclass(frozen=True)
class MouthRewriteSettings:
    """The generator's settings: params.yaml `synthesize.generators.mouth_rewrite` over these defaults."""

    bands: int = 8  # log-mel bands in each feature vector
    fmin: float = 80.0
    fmax: float = 5000.0  # formants that shape the mouth lie below this
    window_s: float = 0.06  # audio around each frame time that its features average over
    dynamic_range_db: float = 60.0  # features floored this far below the clip's loudest column
    rms_weight: float = 2.0  # loudness drives mouth opening most, so it counts more than one band
    context: int = 1  # neighbouring frames each side stacked into the feature (co-articulation)
    context_weight: float = 0.5
    smoothness: float = 0.3  # cost of jumping to a non-consecutive bank mouth (unrelated frames are ~2 apart)
    hold_cost: float = 0.3  # cost of showing the same bank mouth again
    min_run: int = 3  # frames of one take at least between jumps: units of motion (Video Rewrite's triphones)
    # Cost of each transition's visible mouth change differing from what the driving loudness wants,
    # per typical natural frame-to-frame change of the target's mouth (0: audio features alone choose).
    motion_weight: float = 1.0
    mask_scale: float = 1.25  # blend ellipse semi-axes / half the mouth box: covers lip corners and chin
    feather: float = 0.3  # fraction of the ellipse radius over which the blend fades out
    color_match: str = "band"  # band: mean/std over the feather band (skin); mask: the whole ellipse; none
    max_gain: float = 1.5  # bound on the per-channel std ratio of colour matching
    color_smooth_s: float = 0.5  # colour correction averaged over about this long: lighting drifts slowly, jaws do not
    bank_max_side: int = 256  # bank crops keep their native size up to this longer side
    bank_max_frames: int = 500  # bank mouths at most (the first usable frames): selection costs N x M^2
    min_face_fraction: float = 0.5  # of the target's frames, else no face
    face_stride: int = 2  # detector on every 2nd frame: half the cost, gaps are interpolated and smoothed
    silence_dbfs: float = -60.0  # driving or target audio quieter than this (RMS) is silent
    min_audio_s: float = 0.2  # driving audio shorter than this cannot drive a mouth
    crf: int = 18
    preset: str = "veryfast"  # x264 medium costs ~3x the CPU of all the rest on one core; quality is set by crf

    def __post_init__(self) -> None:
        if self.color_match not in ("band", "mask", "none"):
            raise ValueError(f"color_match must be band, mask or none, got {self.color_match!r}")


# The defaults as a plain dict (what provenance records and benchmarks compare against).
DEFAULTS: dict[str, Any] = asdict(MouthRewriteSettings())


@dataclass
class RewritePlan:
    """What each output frame shows: its target frame, its bank mouth, and where the mouth goes."""

    fps: float
    sources: np.ndarray  # (N,) target frame shown at output frame k (k mod T: the target loops)
    picks: np.ndarray  # (N,) bank row pasted at output frame k
    bank: np.ndarray  # (M, h, w, 3) uint8 mouth crops, normalised to one size
    bank_frames: np.ndarray  # (M,) target frame each bank row was cut from
    centres: np.ndarray  # (T, 2) mouth centre per target frame
    halves: np.ndarray  # (T, 2) half width and height of the mouth box per target frame
    crop_scale: float  # bank crops span crop_scale x the mouth box (a little beyond the blend ellipse)
    usable: np.ndarray  # (T,) bool: a face is known on this target frame (else it passes unchanged)
    cost: float  # mean feature distance along the chosen path
    jumps: int  # output frames whose bank mouth does not continue the previous one

    def __len__(self) -> int:
        return len(self.sources)


@dataclass
class Composite:
    """One output frame and its blend mask, which is non-zero only inside `box` (x1, y1, x2, y2)."""

    frame: np.ndarray  # (H, W, 3) uint8
    box: tuple[int, int, int, int]  # the region the mouth was pasted into (empty when none)
    mask: np.ndarray  # (y2-y1, x2-x1) float32 in 0..1: weight of the pasted mouth

    def full_mask(self) -> np.ndarray:
        """The blend mask as a full-frame (H, W) float32 array."""
        out = np.zeros(self.frame.shape[:2], np.float32)
        x1, y1, x2, y2 = self.box
        out[y1:y2, x1:x2] = self.mask
        return out


# ----------------------------------------------------------------------------------------------
# Audio features


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_basis(bands: int, fmin: float, fmax: float) -> np.ndarray:
    """(bands, n_fft/2 + 1) triangular filters evenly spaced on the mel scale (HTK formula), unit peak."""
    edges = 700.0 * (10 ** (np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), bands + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(_N_FFT, 1.0 / FEATURE_RATE)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def _column_power(audio: np.ndarray) -> np.ndarray:
    """Power spectrogram (F, C) with 10 ms columns, column c centred at c * 10 ms (Hann window)."""
    # numpy rather than librosa: features need no exact reference STFT, and importing librosa costs seconds.
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio, (_N_FFT // 2, _N_FFT // 2 + (-len(audio)) % _HOP))
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    window = np.hanning(_N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    return (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2).T


def _window_mean(columns: np.ndarray, times: np.ndarray, window_s: float) -> np.ndarray:
    """Mean of (D, C) column values over the columns within window_s around each time: (len(times), D)."""
    n = columns.shape[1]
    cum = np.concatenate([np.zeros((columns.shape[0], 1)), np.cumsum(columns, axis=1, dtype=np.float64)], axis=1)
    rate = FEATURE_RATE / _HOP
    lo = np.clip(np.ceil((times - window_s / 2) * rate), 0, n - 1).astype(np.int64)
    hi = np.clip(np.floor((times + window_s / 2) * rate) + 1, lo + 1, n).astype(np.int64)
    return ((cum[:, hi] - cum[:, lo]) / (hi - lo)).T


def band_levels(audio: np.ndarray, times: np.ndarray, bands: int = 8, fmin: float = 80.0, fmax: float = 5000.0,
                window_s: float = 0.06, dynamic_range_db: float = 60.0) -> np.ndarray:
    """Levels in dB (N, bands + 1) of 16 kHz audio around each time: log-mel bands, then overall loudness."""
    power = _column_power(audio)
    mel = _mel_basis(bands, fmin, fmax) @ power
    columns = np.vstack([mel, power.sum(axis=0, keepdims=True)])
    db = 10 * np.log10(np.maximum(_window_mean(columns, np.asarray(times, np.float64), window_s), 1e-12))
    # A floor relative to the clip's peak: the level of near-silence (room noise) says nothing of the mouth.
    return np.maximum(db, db.max(axis=0, keepdims=True) - dynamic_range_db)


def audio_features(audio: np.ndarray, times: np.ndarray, bands: int = 8, fmin: float = 80.0,
                   fmax: float = 5000.0, window_s: float = 0.06, dynamic_range_db: float = 60.0,
                   rms_weight: float = 2.0, context: int = 1, context_weight: float = 0.5) -> np.ndarray:
    """Per-time features (N, D) of 16 kHz audio: z-normalised log-mel bands and loudness, with context."""
    db = band_levels(audio, times, bands, fmin, fmax, window_s, dynamic_range_db)
    # Per-clip z-scores: a speaker's own range maps onto another's (level, voice and channel differ).
    z = (db - db.mean(axis=0)) / (db.std(axis=0) + 1e-6)
    z[:, -1] *= rms_weight
    if context <= 0 or len(z) < 2:
        return z.astype(np.float32)
    parts = [z]
    for offset in range(1, int(context) + 1):
        parts.append(context_weight * z[np.maximum(np.arange(len(z)) - offset, 0)])
        parts.append(context_weight * z[np.minimum(np.arange(len(z)) + offset, len(z) - 1)])
    return np.hstack(parts).astype(np.float32)


def loudness_at(audio: np.ndarray, times: np.ndarray, window_s: float = 0.04, sample_rate: int = FEATURE_RATE,
                floor_db: float = -60.0) -> np.ndarray:
    """RMS loudness in dB (relative to the clip's loudest time, floored) over window_s around each time."""
    audio = np.asarray(audio, dtype=np.float64)
    half = max(1, int(window_s * sample_rate / 2))
    centres = np.clip((np.asarray(times) * sample_rate).astype(np.int64), 0, len(audio) - 1)
    power = np.concatenate([[0.0], np.cumsum(audio ** 2)])
    lo, hi = np.clip(centres - half, 0, len(audio)), np.clip(centres + half, 1, len(audio))
    db = 10 * np.log10(np.maximum((power[hi] - power[lo]) / np.maximum(hi - lo, 1), 1e-20))
    return np.maximum(db - db.max(), floor_db)


def _quantile_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank as a fraction in (0, 1): (rank - 0.5) / N, ties sharing their average rank."""
    unique, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends) / 2.0)[inverse.reshape(-1)] / len(inverse.reshape(-1))


def _dbfs(audio: np.ndarray) -> float:
    """RMS level of the whole signal in dB full scale."""
    return float(10 * np.log10(np.mean(np.asarray(audio, np.float64) ** 2) + 1e-20))


# ----------------------------------------------------------------------------------------------
# Selection


def select_path(cost: np.ndarray, follows: np.ndarray, smoothness: float, hold_cost: float,
                distance: np.ndarray | None = None, wanted_motion: np.ndarray | None = None,
                motion_weight: float = 0.0, min_run: int = 1) -> np.ndarray:
    """Bank row per output frame (N,) minimising summed cost (N, M) plus transition costs (Viterbi).

    Moving from row i to row j costs nothing when j continues i (follows[j] == i: the next frame of
    the same take, so natural mouth motion plays out), hold_cost when j == i, smoothness otherwise
    (a jump). A jump may only come min_run frames or more after the previous one, so the output is
    made of units of at least min_run frames of one take (Video Rewrite's triphones, in frames).
    With `distance` (M, M), how much the mouth visibly changes between rows, and `wanted_motion` (N,),
    how much it should change into each output frame, every transition also costs
    motion_weight * |change - wanted|: the change is 0 for a hold, distance[i, j] otherwise.
    """
    n, m = cost.shape
    runs = max(1, int(min_run))
    # State (a, j): showing row j, a + 1 frames since the last jump (the last age means min_run or more).
    back_row = np.empty((n, runs, m), dtype=np.int32)
    back_age = np.empty((n, runs, m), dtype=np.int8)
    total = np.full((runs, m), np.inf)
    total[runs - 1] = cost[0]
    rows = np.arange(m)
    has_prev = follows >= 0
    prev = np.where(has_prev, follows, 0)
    visual = distance is not None and wanted_motion is not None and motion_weight > 0
    if visual:
        distance = np.asarray(distance, np.float64)
        natural = np.where(has_prev, distance[prev, rows], 0.0)
    for k in range(1, n):
        mu = float(wanted_motion[k]) if visual else 0.0
        # Jumps, into age 0 from a run that is long enough.
        ready = total[runs - 1]
        if visual:
            jumps = ready[:, None] + motion_weight * np.abs(distance - mu)
            jump_from = np.argmin(jumps, axis=0)
            jump_value = jumps[jump_from, rows] + smoothness
        else:
            best = int(np.argmin(ready))
            jump_from = np.full(m, best)
            jump_value = np.full(m, ready[best] + smoothness)
        hold_extra = hold_cost + motion_weight * mu if visual else hold_cost
        advance_extra = np.where(has_prev, motion_weight * np.abs(natural - mu) if visual else 0.0, np.inf)
        new = np.empty((runs, m))
        for age in range(runs):
            # Holding or continuing ages a run by one frame; the last age absorbs longer runs.
            if runs == 1:
                source, source_age = total[0], np.zeros(m, np.int8)
            elif age == 0:
                source, source_age = None, None
            elif age == runs - 1:
                older = total[runs - 1] <= total[runs - 2]
                source = np.where(older, total[runs - 1], total[runs - 2])
                source_age = np.where(older, runs - 1, runs - 2).astype(np.int8)
            else:
                source, source_age = total[age - 1], np.full(m, age - 1, np.int8)
            value = np.full(m, np.inf)
            row = rows.astype(np.int32).copy()
            from_age = np.full(m, runs - 1, np.int8)
            if age == 0:
                value, row = jump_value.copy(), jump_from.astype(np.int32)
            if source is not None:
                stay = source + hold_extra
                better = stay < value
                value[better], row[better], from_age[better] = stay[better], rows[better], source_age[better]
                advance = source[prev] + advance_extra
                better = advance <= value  # ties go to continuing: it looks the most natural
                value[better], row[better], from_age[better] = advance[better], prev[better], source_age[prev][better]
            new[age] = value + cost[k]
            back_row[k, age], back_age[k, age] = row, from_age
        total = new
    path = np.empty(n, dtype=np.int64)
    age, path[-1] = np.unravel_index(int(np.argmin(total)), total.shape)
    for k in range(n - 1, 0, -1):
        path[k - 1], age = back_row[k, age, path[k]], back_age[k, age, path[k]]
    return path


# ----------------------------------------------------------------------------------------------
# Geometry and blending


def _crop_matrix(centre: np.ndarray, half: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Affine map (2, 3) from frame pixels to a (w, h) crop of the box centre +- half."""
    w, h = size
    sx, sy = w / (2 * half[0]), h / (2 * half[1])
    # Pixel centres: crop pixel u covers frame x in [cx - hx + u / sx, ...], sampled at its centre.
    return np.array([[sx, 0, -(centre[0] - half[0]) * sx - 0.5 + 0.5 * sx],
                     [0, sy, -(centre[1] - half[1]) * sy - 0.5 + 0.5 * sy]], dtype=np.float64)


def _ellipse_mask(box: tuple[int, int, int, int], centre: np.ndarray, axes: np.ndarray, feather: float) -> np.ndarray:
    """Feathered ellipse weights over the pixels of box: 1 inside, smooth fall to exactly 0 at the rim."""
    x1, y1, x2, y2 = box
    # Pixel i spans [i, i + 1): its centre is i + 0.5 in the box coordinates the detector gives.
    xs = (np.arange(x1, x2, dtype=np.float32) + 0.5 - centre[0]) / axes[0]
    ys = (np.arange(y1, y2, dtype=np.float32) + 0.5 - centre[1]) / axes[1]
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    t = np.clip((1.0 - r) / max(feather, 1e-3), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no visible edge where the ramp starts


def _colour_stats(src: np.ndarray, dst: np.ndarray, weights: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-channel log std ratio and mean difference (dst vs src) over the weighted pixels, and src's
    weighted mean; None when the weights are too few."""
    wsum = float(weights.sum())
    if wsum < 1.0:
        return None
    mu_s, sd_s = _weighted_moments(src, weights, wsum)
    mu_d, sd_d = _weighted_moments(dst, weights, wsum)
    return np.log(np.maximum(sd_d, 1e-3) / np.maximum(sd_s, 1e-3)), mu_d - mu_s, mu_s


def _weighted_moments(pixels: np.ndarray, weights: np.ndarray, wsum: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel weighted mean and std of (h, w, C) pixels: matrix-vector products, not axis reductions."""
    flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.float32, copy=False)
    w = weights.reshape(-1).astype(np.float32, copy=False)
    mean = (w @ flat).astype(np.float64) / wsum
    centred = flat - mean.astype(np.float32)  # centred first: no cancellation in float32
    return mean, np.sqrt(np.maximum((w @ (centred * centred)).astype(np.float64) / wsum, 0.0))


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def mouth_activity(frames: Any, centres: np.ndarray, halves: np.ndarray, size: tuple[int, int] = (64, 48),
                   kind: str = "motion") -> np.ndarray:
    """Per-frame mouth activity (N,): mean abs change of the normalised mouth crop ('motion'), or dark-pixel fraction ('opening')."""
    crops = []
    for frame, c, h in zip(frames, centres, halves):
        if not np.isfinite(c).all():
            crops.append(np.full(size[::-1], np.nan, np.float32))
            continue
        m = _crop_matrix(np.asarray(c), np.asarray(h), size)
        crops.append(cv2.warpAffine(_grey(frame), m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
                     .astype(np.float32))
    crops = np.stack(crops)
    # The inscribed ellipse: the lips and mouth, not the corners of the box.
    inside = _ellipse_mask((0, 0, size[0], size[1]), np.array(size) / 2, np.array(size) / 2, 1e-3) > 0
    if kind == "motion":
        diff = np.abs(np.diff(crops, axis=0))[:, inside].mean(axis=1)
        return np.concatenate([[diff[0] if len(diff) else 0.0], diff])
    if kind == "opening":
        pixels = crops[:, inside]
        level = np.nanmedian(pixels, axis=1, keepdims=True)
        return (pixels < 0.55 * level).mean(axis=1)
    raise ValueError(f"kind must be 'motion' or 'opening', got {kind!r}")


def _mouth_descriptors(bank: np.ndarray, crop_scale: float, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """(M, P) float32 grey pixels of each bank crop's mouth box (its central 1 / crop_scale), inside the inscribed ellipse."""
    h, w = bank.shape[1:3]
    bw, bh = w / crop_scale, h / crop_scale
    to_box = _crop_matrix(np.array([w / 2, h / 2]), np.array([bw / 2, bh / 2]), size)
    inside = _ellipse_mask((0, 0, size[0], size[1]), np.array(size) / 2, np.array(size) / 2, 1e-3) > 0
    return np.stack([cv2.warpAffine(_grey(crop), to_box, size, flags=cv2.INTER_AREA)[inside]
                     for crop in bank]).astype(np.float32)


def _visual_distance(descriptors: np.ndarray) -> np.ndarray:
    """(M, M) RMS grey-level difference between every two mouth descriptors."""
    d = descriptors.astype(np.float64)
    sq = (d ** 2).sum(axis=1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * d @ d.T, 0.0) / d.shape[1])


# ----------------------------------------------------------------------------------------------
# The generator


class MouthRewrite(LipGenerator):
    """Re-sequences the target's own mouths to the driving audio (no weights, CPU, faster than real time)."""

    name = "mouth_rewrite"
    version = "2"  # 2: appearance-aware jump cost, 3-frame units (different fakes for the same inputs)
    input_kind = VIDEO
    needs_face = True

    def __init__(self, **settings: Any) -> None:
        # An unknown key or a mistyped value is a ParamsError naming it (the stage's own keys are skipped).
        self.options = config_from_dict(MouthRewriteSettings, settings, f"synthesize.generators.{self.name}",
                                        ignore=STAGE_KEYS)
        super().__init__(**asdict(self.options))

    def _options(self, params: dict | None) -> MouthRewriteSettings:
        """The settings for one call: a call's params may change any setting (other call keys, e.g. a seed, are not ours)."""
        changes = {k: v for k, v in (params or {}).items() if k in DEFAULTS}
        if not changes:
            return self.options
        return config_from_dict(MouthRewriteSettings, {**asdict(self.options), **changes}, self.name)

    # -- planning ----------------------------------------------------------------------------

    def plan(self, frames: np.ndarray, fps: float, target_audio: np.ndarray, driving_audio: np.ndarray,
             label: str = "target", params: dict | None = None, track: Any = None) -> RewritePlan:
        """Choose a bank mouth for every output frame; audio is 16 kHz mono, output length follows driving_audio.

        `track` (a media.faces.FaceTrack of these frames) skips face tracking when the caller has one.
        """
        from avlips.media.errors import MediaError
        from avlips.media.faces import require_face, track_faces

        o = self._options(params)
        if len(frames) == 0:
            raise GeneratorError(f"{label}: target has no frames")
        duration = len(driving_audio) / FEATURE_RATE
        if duration < o.min_audio_s:
            raise GeneratorError(f"driving audio too short: {duration:.3f} s (need {o.min_audio_s} s)")
        if _dbfs(driving_audio) < o.silence_dbfs:
            raise GeneratorError(f"driving audio is silent ({_dbfs(driving_audio):.1f} dBFS)")
        if len(target_audio) == 0 or _dbfs(target_audio) < o.silence_dbfs:
            raise GeneratorError(f"{label}: target audio is silent: its mouths cannot be keyed by its speech")

        if track is None:
            track = track_faces(frames, stride=o.face_stride, fps=fps, label=label)
        elif len(track) != len(frames):
            raise GeneratorError(f"{label}: face track has {len(track)} frames, target {len(frames)}")
        try:
            require_face(track, o.min_face_fraction, label=label)
        except MediaError as exc:
            raise GeneratorError(f"no face: {exc}") from exc
        usable = track.found & np.isfinite(track.mouths).all(axis=1)
        mouths = np.where(usable[:, None], track.mouths, np.nan)
        centres = (mouths[:, :2] + mouths[:, 2:]) / 2
        halves = (mouths[:, 2:] - mouths[:, :2]) / 2
        crop_scale = o.mask_scale * _CROP_MARGIN

        # The first bank_max_frames usable frames: plenty of mouths, and selection stays O(N * M^2) bounded.
        bank_frames = np.flatnonzero(usable)[: max(2, o.bank_max_frames)]
        bank_size = self._bank_size(halves[bank_frames] * crop_scale, o.bank_max_side)
        bank = np.stack([
            cv2.warpAffine(frames[t], _crop_matrix(centres[t], halves[t] * crop_scale, bank_size), bank_size,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for t in bank_frames])

        n_out = max(1, int(round(duration * fps)))
        feature_options = {k: getattr(o, k) for k in ("bands", "fmin", "fmax", "window_s", "dynamic_range_db",
                                             "rms_weight", "context", "context_weight")}
        target_times = (np.arange(len(frames)) + 0.5) / fps
        keys = audio_features(target_audio, target_times, **feature_options)[bank_frames]
        wanted = audio_features(driving_audio, (np.arange(n_out) + 0.5) / fps, **feature_options)
        # Squared distance per feature dimension: about 2 between unrelated frames, whatever D is.
        cost = ((wanted ** 2).sum(1)[:, None] + (keys ** 2).sum(1)[None, :] - 2 * wanted @ keys.T) / keys.shape[1]
        cost = np.maximum(cost, 0.0)
        follows = np.full(len(bank_frames), -1, dtype=np.int64)
        consecutive = np.flatnonzero(np.diff(bank_frames) == 1) + 1
        follows[consecutive] = consecutive - 1
        distance, wanted_motion = None, None
        if o.motion_weight > 0 and len(consecutive):
            distance = _visual_distance(_mouth_descriptors(bank, crop_scale))
            natural = distance[follows[consecutive], consecutive]  # the target's own frame-to-frame change
            distance /= float(np.median(natural)) + 1e-6  # in units of a typical natural change
            # Mouths move while speaking and rest in silence: the louder the driving audio at a frame
            # (ranked within the clip), the larger the change into it, spread like the target's own.
            loud = band_levels(driving_audio, (np.arange(n_out) + 0.5) / fps, o.bands, o.fmin,
                               o.fmax, o.window_s, o.dynamic_range_db)[:, -1]
            wanted_motion = np.quantile(distance[follows[consecutive], consecutive], _quantile_ranks(loud))
        path = select_path(cost, follows, o.smoothness, o.hold_cost, distance, wanted_motion,
                           o.motion_weight, o.min_run)
        jumps = int(np.sum(follows[path[1:]] != path[:-1]))
        return RewritePlan(fps=float(fps), sources=np.arange(n_out) % len(frames), picks=path, bank=bank,
                           bank_frames=bank_frames, centres=centres, halves=halves, crop_scale=crop_scale,
                           usable=usable,
                           cost=float(cost[np.arange(n_out), path].mean()), jumps=jumps)

    @staticmethod
    def _bank_size(halves: np.ndarray, max_side: int) -> tuple[int, int]:
        """(w, h) of bank crops: the clip's median mouth crop size, capped, even."""
        w, h = 2 * np.median(halves, axis=0)
        scale = min(1.0, max_side / max(w, h))
        return max(8, int(round(w * scale / 2)) * 2), max(8, int(round(h * scale / 2)) * 2)

    # -- rendering ---------------------------------------------------------------------------

    def render(self, plan: RewritePlan, frames: np.ndarray, params: dict | None = None) -> Iterator[Composite]:
        """The output frames with their blend masks, in order."""
        o = self._options(params)
        scale, feather = o.mask_scale, o.feather
        height, width = frames.shape[1:3]
        bank_size = (plan.bank.shape[2], plan.bank.shape[1])
        max_log_gain = float(np.log(max(o.max_gain, 1.0)))
        smooth = min(1.0, 1.0 / max(1.0, o.color_smooth_s * plan.fps))  # EMA weight of a new frame
        log_gain, offset = np.zeros(3), None
        for k in range(len(plan)):
            s = int(plan.sources[k])
            frame = frames[s]
            if not plan.usable[s]:
                yield Composite(frame.copy(), (0, 0, 0, 0), np.zeros((0, 0), np.float32))
                continue
            centre, half = plan.centres[s], plan.halves[s]
            axes = half * scale
            box = (max(0, int(np.floor(centre[0] - axes[0]))), max(0, int(np.floor(centre[1] - axes[1]))),
                   min(width, int(np.ceil(centre[0] + axes[0])) + 1), min(height, int(np.ceil(centre[1] + axes[1])) + 1))
            x1, y1, x2, y2 = box
            if x2 <= x1 or y2 <= y1:
                yield Composite(frame.copy(), (0, 0, 0, 0), np.zeros((0, 0), np.float32))
                continue
            mask = _ellipse_mask(box, centre, axes, feather)
            # Bank crop -> this frame: invert the crop map of this frame's own mouth box, shifted to the box.
            to_crop = _crop_matrix(centre, half * plan.crop_scale, bank_size)
            to_frame = cv2.invertAffineTransform(to_crop)
            to_frame[:, 2] -= (x1, y1)
            mouth = cv2.warpAffine(plan.bank[plan.picks[k]], to_frame, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            region = frame[y1:y2, x1:x2].astype(np.float32)
            if o.color_match != "none":
                # The feather band is cheek and chin skin on both: matching there fixes lighting drift
                # without undoing the mouth's own change (a dark open mouth stays dark).
                weights = mask * (1 - mask) * 4 if o.color_match == "band" else mask
                stats = _colour_stats(mouth, region, weights)
                if stats is not None:
                    # Averaged over time: a per-frame match would let the target's own jaw motion in
                    # the band flicker the pasted mouth's brightness in step with the original speech.
                    if offset is None:
                        log_gain, offset = stats[:2]
                    else:
                        log_gain = log_gain + smooth * (stats[0] - log_gain)
                        offset = offset + smooth * (stats[1] - offset)
                if offset is not None:
                    mean = stats[2] if stats is not None else \
                        _weighted_moments(mouth, weights, max(float(weights.sum()), 1e-6))[0]
                    gain = np.exp(np.clip(log_gain, -max_log_gain, max_log_gain))
                    # (mouth - mean) * gain + mean + offset, in place.
                    mouth *= gain.astype(np.float32)
                    mouth += (mean * (1 - gain) + offset).astype(np.float32)
            out = frame.copy()
            # region + m * (mouth - region): where m == 0 this is exactly the target pixel.
            mouth -= region
            mouth *= mask[..., None]
            mouth += region
            np.rint(mouth, out=mouth)
            np.clip(mouth, 0, 255, out=mouth)
            out[y1:y2, x1:x2] = mouth.astype(np.uint8)
            yield Composite(out, box, mask)

    # -- the plugin entry point --------------------------------------------------------------

    def generate(self, target: Target, driving: DrivingAudio, out_path: str | Path,
                 params: dict | None = None) -> GenerationResult:
        """Write the target re-mouthed to the driving audio, with that audio, to out_path."""
        from avlips.media.errors import MediaError, NoAudio
        from avlips.media.audio_decode import read_audio
        from avlips.media.encode import write_video
        from avlips.media.frames import iter_frames
        from avlips.media.probe import probe

        started = time.perf_counter()
        o = self._options(params)
        try:
            info = probe(target.path)
            frames = np.stack(list(iter_frames(target.path)))
        except MediaError as exc:
            raise GeneratorError(f"target unreadable: {exc}") from exc
        try:
            target_audio = read_audio(target.path, FEATURE_RATE)
        except NoAudio as exc:
            raise GeneratorError(f"target has no audio: mouth_rewrite keys its mouths by the target's speech ({exc})") from exc
        except MediaError as exc:
            raise GeneratorError(f"target audio unreadable: {exc}") from exc
        try:
            driving_audio = read_audio(driving.path, FEATURE_RATE)
        except MediaError as exc:
            raise GeneratorError(f"driving audio unreadable: {exc}") from exc
        fps = info.fps or target.fps or 25.0
        plan = self.plan(frames, fps, target_audio, driving_audio, label=target.path, params=params)
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_video(out_path, (c.frame for c in self.render(plan, frames, params)), fps, audio=driving_audio,
                        sample_rate=FEATURE_RATE, crf=o.crf, preset=o.preset)
        except MediaError as exc:
            raise GeneratorError(f"encoding failed: {exc}") from exc
        return GenerationResult(
            path=str(out_path), generator=self.name, version=self.version, params=asdict(o),
            seconds=self.timed(started), frames=len(plan), fps=float(fps),
            extra={"bank": int(len(plan.bank)), "jumps": plan.jumps, "path_cost": round(plan.cost, 4),
                   "looped": bool(len(plan) > len(frames))},
        )

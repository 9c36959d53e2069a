"""Faces and mouths in frames: pluggable detection, tracking with temporal smoothing, square crops.

Frames are RGB uint8 (H, W, 3). Boxes are x1, y1, x2, y2 floats in pixels of the frame they
were found in. The default detector is OpenCV's bundled Haar cascade; others plug in through
`register_detector` and only need a `detect(frame_rgb) -> list[Box]` method.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from avlips.media.errors import NoFace, NoFrames

__all__ = [
    "Box",
    "FaceDetector",
    "HaarFaceDetector",
    "FaceTrack",
    "MOUTH_FRACTIONS",
    "register_detector",
    "get_detector",
    "available_detectors",
    "detect_face",
    "mouth_box",
    "mouth_boxes",
    "track_faces",
    "track_video",
    "track_faces_sparse",
    "tracking_detector",
    "WindowFaces",
    "require_face",
    "square_crop_box",
    "square_crop_boxes",
    "crop_square",
    "crop_squares",
]

# Mouth box as fractions (left, top, right, bottom) of the Haar frontal face box. That box runs
# from the eyebrows to about the lower lip's bottom edge; on the bundled videos and photos the
# closed lips sit in x 0.30-0.70, y 0.72-0.93 (centre y 0.78-0.88 by person). The margins let
# the box hold the lips through a wide opening (the lower lip drops towards the chin), a broad
# smile and a few degrees of head turn, while the top stays under the nostrils' upper edge.
MOUTH_FRACTIONS: tuple[float, float, float, float] = (0.20, 0.64, 0.80, 1.04)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates, with the detector's confidence (higher is surer)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0

    def __post_init__(self) -> None:
        # Plain floats, whatever numeric type the detector produced (numpy scalars print noisily).
        for name in ("x1", "y1", "x2", "y2", "score"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def width(self) -> float:
        """Width in pixels."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """Height in pixels."""
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        """Centre (x, y)."""
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    @property
    def area(self) -> float:
        """Area in square pixels (0 for an inverted box)."""
        return max(0.0, self.width) * max(0.0, self.height)

    def as_array(self) -> np.ndarray:
        """The corners as a float64 array [x1, y1, x2, y2]."""
        return np.array([self.x1, self.y1, self.x2, self.y2], dtype=np.float64)

    @classmethod
    def from_array(cls, corners: Sequence[float] | np.ndarray, score: float = 1.0) -> "Box":
        """A box from [x1, y1, x2, y2]."""
        x1, y1, x2, y2 = (float(v) for v in np.asarray(corners, dtype=np.float64).reshape(4))
        return cls(x1, y1, x2, y2, float(score))


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB uint8 frame.

    Optional extras the tracker uses when present: `detect_near(frame_rgb, box) -> list[Box]`,
    a cheaper search around where the face was on the previous frame (an empty list makes the
    tracker fall back to `detect`), and `mouth_fractions`, the mouth box as fractions of this
    detector's face box (see MOUTH_FRACTIONS).
    """

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        """All faces in the frame, in its pixel coordinates."""
        ...


_REGISTRY: dict[str, Callable[..., FaceDetector]] = {}
# cv2 cascades are not documented as thread-safe: the shared default detector and the smile
# cascade are kept one per thread.
_local = threading.local()


def register_detector(name: str) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Decorator registering a detector class or factory under `name` for get_detector."""

    def add(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        _REGISTRY[name] = factory
        return factory

    return add


def get_detector(name: str = "haar", **params: Any) -> FaceDetector:
    """A new detector of the registered kind `name`, built with `params`."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**params)


def available_detectors() -> list[str]:
    """Names accepted by get_detector."""
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------
# The Haar cascade detector

_CASCADE_ALIASES = {
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "alt2": "haarcascade_frontalface_alt2.xml",
    "profile": "haarcascade_profileface.xml",
    "smile": "haarcascade_smile.xml",
}


def _cascade_path(name: str) -> str:
    if os.path.isfile(name):
        return name
    file = _CASCADE_ALIASES.get(name, name if name.endswith(".xml") else f"haarcascade_{name}.xml")
    return os.path.join(cv2.data.haarcascades, file)


def _load_cascade(name: str) -> cv2.CascadeClassifier:
    path = _cascade_path(name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"Haar cascade {name!r} not found or unreadable at {path}")
    return cascade


def _to_gray(frame: np.ndarray) -> np.ndarray:
    """Grey uint8 view of an RGB, RGBA or grey frame."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_RGBA2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    raise ValueError(f"frames must be (H, W, 3) RGB, got shape {frame.shape}")


@register_detector("haar")
class HaarFaceDetector:
    """Frontal faces by OpenCV's bundled Haar cascades, run on a small equalised grey copy.

    `cascade` runs first; each of `fallbacks` runs only when everything before found nothing
    ("profile" also searches the mirrored image, as that cascade knows one side only). Scores
    are the cascade's neighbour votes: comparable within one detector, not probabilities.
    """

    # The cascade's own window is 24 px; faces are searched down to this many pixels in the
    # detection copy so the smallest allowed face is still well resolved.
    _MIN_WINDOW = 24

    def __init__(
        self,
        cascade: str = "default",
        fallbacks: Sequence[str] = ("alt2",),
        detect_side: int = 320,
        min_face: float = 0.15,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        near_side: int = 96,
        near_scale_factor: float = 1.1,
        near_margin: float = 1.0,
        near_sizes: tuple[float, float] = (0.65, 1.5),
        equalize: bool = True,
    ) -> None:
        if not 0 < min_face < 1:
            raise ValueError(f"min_face is a fraction of the frame's shorter side, got {min_face}")
        if scale_factor <= 1 or near_scale_factor <= 1:
            raise ValueError("scale factors must be > 1")
        if not (0 < near_sizes[0] < 1 < near_sizes[1] and near_margin >= near_sizes[1] / 2):
            raise ValueError(f"near_sizes must be (low < 1 < high) and near_margin at least half of high (the "
                             f"largest face must fit), got {near_sizes}, {near_margin}")
        self.cascade = cascade
        self.fallbacks = tuple(fallbacks)
        self.detect_side = int(detect_side)  # longest side of the detection copy
        self.min_face = float(min_face)  # smallest face, as a fraction of the frame's shorter side
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.near_side = int(near_side)  # face size (px) the local search in detect_near works at
        self.near_scale_factor = float(near_scale_factor)
        # detect_near searches this many box sides either side of the box's centre, for faces of
        # these multiples of its side: each extra scale costs about as much as the whole crop.
        self.near_margin = float(near_margin)
        self.near_sizes = (float(near_sizes[0]), float(near_sizes[1]))
        self.equalize = bool(equalize)
        self.mouth_fractions = MOUTH_FRACTIONS
        self._cascades: dict[str, cv2.CascadeClassifier] = {}
        for name in (self.cascade, *self.fallbacks):
            self._get(name)  # fail at construction on a bad cascade name, not on the first frame

    def __getstate__(self) -> dict:
        # cv2 cascades do not pickle; workers that receive a pickled detector reload them.
        state = self.__dict__.copy()
        state["_cascades"] = {}
        return state

    def __repr__(self) -> str:
        return (f"HaarFaceDetector(cascade={self.cascade!r}, fallbacks={self.fallbacks!r}, "
                f"detect_side={self.detect_side}, min_face={self.min_face})")

    def _get(self, name: str) -> cv2.CascadeClassifier:
        cascade = self._cascades.get(name)
        if cascade is None:
            cascade = self._cascades[name] = _load_cascade(name)
        return cascade

    def _prepare(self, gray: np.ndarray, scale: float) -> np.ndarray:
        if scale < 1:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # Equalising evens out exposure and low-contrast (restored, smoothed) faces.
        return cv2.equalizeHist(gray) if self.equalize else np.ascontiguousarray(gray)

    def _run(self, gray: np.ndarray, factor: float, min_px: int, max_px: int) -> list[tuple[np.ndarray, float]]:
        """(x, y, w, h) and votes from the first cascade in the chain that finds anything."""
        for name in (self.cascade, *self.fallbacks):
            cascade = self._get(name)
            found = self._cascade_hits(cascade, gray, factor, min_px, max_px)
            if name == "profile":
                mirrored = self._cascade_hits(cascade, np.ascontiguousarray(gray[:, ::-1]), factor, min_px, max_px)
                width = gray.shape[1]
                found += [(np.array([width - r[0] - r[2], r[1], r[2], r[3]]), v) for r, v in mirrored]
            if found:
                return found
        return []

    def _cascade_hits(self, cascade: cv2.CascadeClassifier, gray: np.ndarray, factor: float,
                      min_px: int, max_px: int) -> list[tuple[np.ndarray, float]]:
        if min(gray.shape) < min_px:
            return []
        rects, votes = cascade.detectMultiScale2(
            gray, scaleFactor=factor, minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px), maxSize=(max_px, max_px),
        )
        return [(np.asarray(r, dtype=np.float64), float(v)) for r, v in zip(rects, np.ravel(votes))]

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        """All faces in the frame, in its pixel coordinates."""
        gray = _to_gray(frame_rgb)
        height, width = gray.shape
        scale = min(1.0, self.detect_side / max(height, width))
        small = self._prepare(gray, scale)
        min_px = max(self._MIN_WINDOW, int(self.min_face * min(small.shape)))
        found = self._run(small, self.scale_factor, min_px, max(small.shape))
        return [Box(x / scale, y / scale, (x + w) / scale, (y + h) / scale, v) for (x, y, w, h), v in found]

    def detect_near(self, frame_rgb: np.ndarray, box: Box) -> list[Box]:
        """Faces of about the size of `box` (near_sizes) within near_margin sides of its centre (a cheap tracking search)."""
        side = max(box.width, box.height)
        if not side > 0:
            return []
        height, width = frame_rgb.shape[:2]
        cx, cy = box.center
        reach = self.near_margin * side
        x1, y1 = max(0, int(cx - reach)), max(0, int(cy - reach))
        x2, y2 = min(width, int(math.ceil(cx + reach))), min(height, int(math.ceil(cy + reach)))
        if x2 - x1 < side * 0.8 or y2 - y1 < side * 0.8:
            return []
        gray = _to_gray(frame_rgb[y1:y2, x1:x2])
        # Work where the face is about near_side px: enough for the 24 px cascade, and the
        # few scales between min and max size keep this several times cheaper than detect.
        scale = min(1.0, self.near_side / side)
        small = self._prepare(gray, scale)
        smallest, largest = self.near_sizes
        min_px = max(self._MIN_WINDOW, int(smallest * side * scale))
        max_px = int(math.ceil(largest * side * scale))
        found = self._run(small, self.near_scale_factor, min_px, max_px)
        return [Box(x1 + x / scale, y1 + y / scale, x1 + (x + w) / scale, y1 + (y + h) / scale, v)
                for (x, y, w, h), v in found]


# ----------------------------------------------------------------------------------------------
# Single images and mouth boxes


def _default_detector() -> FaceDetector:
    """A Haar detector with default settings, one per thread (loading the cascades takes ~40 ms)."""
    detector = getattr(_local, "haar", None)
    if detector is None:
        detector = _local.haar = HaarFaceDetector()
    return detector


def tracking_detector() -> HaarFaceDetector:
    """The Haar detector of the sparse trackers (track_faces_sparse, WindowFaces), one per thread.

    Its local search is the cheap one the trackers lean on: the face at about 64 px, half a side of
    room around the last box and sizes 0.75-1.33 of it (five cascade scales instead of nine). On the
    seven shared talking-head videos that search kept the face on every sampled frame while costing
    under half of the default's; a face that moved further is found again by the full detection.
    """
    detector = getattr(_local, "tracking", None)
    if detector is None:
        detector = _local.tracking = HaarFaceDetector(near_side=64, near_margin=0.8, near_sizes=(0.75, 1.33))
    return detector


def detect_face(image: np.ndarray, detector: FaceDetector | None = None) -> Box | None:
    """The largest face in one RGB image, or None when there is none."""
    boxes = (detector or _default_detector()).detect(image)
    return max(boxes, key=lambda b: b.area) if boxes else None


def _fractions_of(detector: Any) -> tuple[float, float, float, float]:
    return tuple(getattr(detector, "mouth_fractions", MOUTH_FRACTIONS))  # type: ignore[return-value]


def mouth_boxes(faces: np.ndarray, fractions: Sequence[float] = MOUTH_FRACTIONS) -> np.ndarray:
    """Mouth boxes (N, 4) from face boxes (N, 4): the given fractions of each face box."""
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    fl, ft, fr, fb = (float(v) for v in fractions)
    w = faces[:, 2] - faces[:, 0]
    h = faces[:, 3] - faces[:, 1]
    return np.stack([faces[:, 0] + fl * w, faces[:, 1] + ft * h, faces[:, 0] + fr * w, faces[:, 1] + fb * h], axis=1)


# The smile cascade gives 130-250 votes on a mouth in the bundled videos and under 25 where it
# misfires (e.g. on low-contrast stubble), so 40 separates a confident hit.
_SMILE_MIN_VOTES = 40
# Refinement corrects for a person's proportions (mouth centre 0.78-0.88 of the face box height
# across the bundled clips), never for a detector failure, so it moves the box only this much.
_SMILE_MAX_SHIFT = 0.08


def _smile_centre(frame: np.ndarray, face: np.ndarray) -> tuple[float, float] | None:
    """Mouth centre by the smile cascade, as fractions of the face box, or None when unsure."""
    x1, y1, x2, y2 = (float(v) for v in face)
    w, h = x2 - x1, y2 - y1
    height, width = frame.shape[:2]
    # The lower half of the face, a little beyond the box's bottom for an open mouth.
    rx1, ry1 = max(0, int(x1 + 0.1 * w)), max(0, int(y1 + 0.5 * h))
    rx2, ry2 = min(width, int(x2 - 0.1 * w)), min(height, int(y1 + 1.15 * h))
    if rx2 - rx1 < 24 or ry2 - ry1 < 12:
        return None
    cascade = getattr(_local, "smile", None)
    if cascade is None:
        cascade = _local.smile = _load_cascade("smile")
    gray = _to_gray(frame[ry1:ry2, rx1:rx2])
    scale = min(1.0, 120 / gray.shape[1])
    if scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    gw = gray.shape[1]
    rects, votes = cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5,
                                             minSize=(int(0.3 * gw), int(0.12 * gw)))
    votes = np.ravel(votes)
    if not len(rects) or votes.max() < _SMILE_MIN_VOTES:
        return None
    x, y, rw, rh = (float(v) for v in rects[int(np.argmax(votes))])
    return (rx1 + (x + rw / 2) / scale - x1) / w, (ry1 + (y + rh / 2) / scale - y1) / h


def _shift_fractions(fractions: Sequence[float], centre: Sequence[float]) -> tuple[float, float, float, float]:
    """The mouth fractions moved (at most _SMILE_MAX_SHIFT) so their centre goes towards `centre`."""
    fl, ft, fr, fb = (float(v) for v in fractions)
    dx = float(np.clip(centre[0] - (fl + fr) / 2, -_SMILE_MAX_SHIFT, _SMILE_MAX_SHIFT))
    dy = float(np.clip(centre[1] - (ft + fb) / 2, -_SMILE_MAX_SHIFT, _SMILE_MAX_SHIFT))
    return fl + dx, ft + dy, fr + dx, fb + dy


def _refined_fractions(fractions: Sequence[float], centres: list[tuple[float, float] | None]
                       ) -> tuple[float, float, float, float]:
    """Fractions moved to the median smile centre when the cascade was sure on most samples."""
    hits = [c for c in centres if c is not None]
    if len(hits) < 3 or len(hits) < 0.5 * len(centres):
        return tuple(float(v) for v in fractions)  # type: ignore[return-value]
    return _shift_fractions(fractions, np.median(np.array(hits), axis=0))


def mouth_box(face: Box, fractions: Sequence[float] = MOUTH_FRACTIONS, image: np.ndarray | None = None) -> Box:
    """The mouth box of one face box (see MOUTH_FRACTIONS), centred on the smile cascade's hit when `image` gives a sure one."""
    if image is not None:
        centre = _smile_centre(image, face.as_array())
        if centre is not None:
            fractions = _shift_fractions(fractions, centre)
    return Box.from_array(mouth_boxes(face.as_array(), fractions)[0], face.score)


# ----------------------------------------------------------------------------------------------
# Tracking


@dataclass(eq=False)
class FaceTrack:
    """One face followed through a clip: per-frame boxes and how each was obtained."""

    faces: np.ndarray  # (T, 4) float64 smoothed face boxes x1, y1, x2, y2; NaN rows when no face at all
    mouths: np.ndarray  # (T, 4) float64 mouth boxes from the smoothed face boxes
    detected: np.ndarray  # (T,) bool: an accepted raw detection on this frame
    found: np.ndarray  # (T,) bool: detected, or inside a short gap between/after detections
    attempted: np.ndarray  # (T,) bool: the detector ran on this frame (every stride-th, and the last)
    raw: np.ndarray  # (T, 4) float64 accepted raw detections, NaN where none
    fps: float
    mouth_fractions: tuple[float, float, float, float] = MOUTH_FRACTIONS  # used for `mouths`

    def __len__(self) -> int:
        return len(self.detected)

    @property
    def detection_rate(self) -> float:
        """Fraction of the frames the detector ran on that gave an accepted detection."""
        tried = int(self.attempted.sum())
        return float(self.detected.sum()) / tried if tried else 0.0

    @property
    def found_fraction(self) -> float:
        """Fraction of all frames with a trusted box (detected or in a short gap)."""
        return float(self.found.mean()) if len(self.found) else 0.0

    def centre_shift(self) -> np.ndarray:
        """(T-1,) frame-to-frame movement of the smoothed face centre, in face sides."""
        centre = (self.faces[:, :2] + self.faces[:, 2:]) / 2
        side = np.maximum(self.faces[:, 2] - self.faces[:, 0], self.faces[:, 3] - self.faces[:, 1])
        return np.hypot(*np.diff(centre, axis=0).T) / side[1:]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _continuing(previous: Box, candidates: list[Box], min_iou: float) -> Box | None:
    """The candidate overlapping the previous box most, if it overlaps enough."""
    if not candidates:
        return None
    ious = _iou(previous.as_array(), np.stack([c.as_array() for c in candidates]))
    best = int(np.argmax(ious))
    return candidates[best] if ious[best] >= min_iou else None


def _odd(n: float, floor: int = 1) -> int:
    n = max(floor, int(round(n)))
    return n if n % 2 else n + 1


def _reject_outliers(params: np.ndarray, window: int, max_shift: float, max_scale: float) -> np.ndarray:
    """Mask of detections far from the running median of their neighbours (params: N x [cx, cy, w, h])."""
    n = len(params)
    if n < 3:
        return np.zeros(n, dtype=bool)
    window = min(window, n if n % 2 else n - 1)
    med = median_filter(params, size=(window, 1), mode="nearest")
    side = np.sqrt(params[:, 2] * params[:, 3])
    med_side = np.sqrt(med[:, 2] * med[:, 3])
    shift = np.hypot(params[:, 0] - med[:, 0], params[:, 1] - med[:, 1]) / med_side
    return (shift > max_shift) | (np.abs(np.log(side / med_side)) > math.log(max_scale))


def _run_lengths_ok(detected: np.ndarray, max_gap: int) -> np.ndarray:
    """Detected frames plus the undetected runs no longer than max_gap (inner gaps and ends)."""
    ok = detected.copy()
    t = len(detected)
    idx = np.flatnonzero(detected)
    if not len(idx):
        return ok
    bounds = [(-1, idx[0])] + list(zip(idx[:-1], idx[1:])) + [(idx[-1], t)]
    for a, b in bounds:
        if 0 < b - a - 1 <= max_gap:
            ok[a + 1:b] = True
    return ok


def _corners(params: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, width, height to x1, y1, x2, y2."""
    cx, cy, w, h = np.asarray(params, dtype=np.float64).reshape(-1, 4).T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _smooth(series: np.ndarray, median_len: int, sigma: float) -> np.ndarray:
    """A centred running median (drops single-frame spikes), then a Gaussian (drops jitter)."""
    out = series
    if median_len > 1 and len(series) >= median_len:
        out = median_filter(out, size=(median_len, 1), mode="nearest")
    if sigma > 0 and len(series) > 1:
        out = gaussian_filter1d(out, sigma=sigma, axis=0, mode="nearest")
    return out


def track_faces(
    frames: Iterable[np.ndarray],
    detector: FaceDetector | None = None,
    stride: int = 1,
    fps: float = 25.0,
    lost_stride: int | None = None,
    smooth_s: float = 0.3,
    max_gap_s: float = 0.5,
    min_iou: float = 0.3,
    outlier_shift: float = 0.3,
    outlier_scale: float = 1.4,
    use_near: bool = True,
    refine_mouth: bool = True,
    mouth_samples: int = 12,
    label: str = "frames",
) -> FaceTrack:
    """Follow the main face through frames: per-frame face and mouth boxes, smoothed over time.

    The detector runs on every stride-th frame and the last one (frames are consumed once, so a
    decoding generator works), and on every lost_stride-th (default: stride) while it has no face
    to follow: before the first, and after a run that missed it. Each detection continues the track by overlap with the last one
    (IoU >= min_iou); with none, after a gap longer than max_gap_s, the largest face restarts it.
    Detections far from the running median (centre off by outlier_shift sides, size off by
    outlier_scale) are dropped, gaps are interpolated (held at the ends), then centre and size
    are smoothed over about smooth_s seconds. Mouth boxes are fixed fractions of the smoothed
    face box, moved (refine_mouth) to where the smile cascade puts the mouth when it is sure on
    most of up to mouth_samples frames a quarter second apart.
    """
    lost_stride = stride if lost_stride is None else lost_stride
    if stride < 1 or lost_stride < 1:
        raise ValueError(f"stride and lost_stride must be >= 1, got {stride}, {lost_stride}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    detector = detector or _default_detector()
    near = getattr(detector, "detect_near", None) if use_near else None
    max_gap = max(int(round(max_gap_s * fps)), stride - 1)
    # Frames since the last accepted detection before any face may restart the track: as many
    # missed stride-spaced runs as fit in max_gap, counted in frames since lost_stride runs closer.
    relock_frames = (max(1, max_gap // stride) + 1) * stride

    raw: dict[int, Box] = {}
    attempted: list[int] = []
    state: dict[str, Any] = {"ref": None, "lost": 0, "found_at": 0, "next_smile": 0}
    smiles: list[tuple[float, float] | None] = []
    smile_every = max(1, int(round(0.25 * fps)))

    def step(t: int, frame: np.ndarray) -> None:
        attempted.append(t)
        ref: Box | None = state["ref"]
        choice = None
        if ref is not None and near is not None:
            choice = _continuing(ref, near(frame, ref), min_iou)
        if choice is None:
            candidates = detector.detect(frame)
            if ref is not None:
                choice = _continuing(ref, candidates, min_iou)
            if choice is None and candidates and (ref is None or t - state["found_at"] >= relock_frames):
                choice = max(candidates, key=lambda b: b.area)
        if choice is None:
            state["lost"] += 1
        else:
            raw[t] = choice
            state["ref"], state["lost"], state["found_at"] = choice, 0, t
            # A few samples a quarter second apart: the mouth's place in the face box is the
            # person's proportion, so it is measured once per track, not followed per frame.
            if refine_mouth and len(smiles) < mouth_samples and t >= state["next_smile"]:
                smiles.append(_smile_centre(frame, choice.as_array()))
                state["next_smile"] = t + smile_every

    count = 0
    last: np.ndarray | None = None
    for t, frame in enumerate(frames):
        count, last = t + 1, frame
        # Until the first face, or after a missed run, a lost_stride that is shorter looks again sooner.
        searching = state["ref"] is None or state["lost"] > 0
        if t % stride == 0 or (searching and t % lost_stride == 0):
            step(t, frame)
    if count == 0:
        raise NoFrames(label, "no frames to look for faces in")
    if attempted[-1] != count - 1:
        step(count - 1, last)  # type: ignore[arg-type]

    fractions = _refined_fractions(_fractions_of(detector), smiles)
    return _build_track(raw, attempted, count, fps, stride, fractions, smooth_s, max_gap,
                        outlier_shift, outlier_scale)


def _build_track(raw: dict[int, Box], attempted: list[int], count: int, fps: float, stride: int,
                 fractions: tuple[float, float, float, float], smooth_s: float, max_gap: int, outlier_shift: float,
                 outlier_scale: float) -> FaceTrack:
    """Outlier rejection, gap filling and smoothing of the chosen raw detections."""
    tried = np.zeros(count, dtype=bool)
    tried[attempted] = True
    idx = np.array(sorted(raw), dtype=np.int64)
    params = np.array([[*raw[t].center, raw[t].width, raw[t].height] for t in idx], dtype=np.float64).reshape(-1, 4)
    # About one second of detections: a steady head turn moves the median along, a jump does not.
    keep = ~_reject_outliers(params, _odd(fps / stride, 5), outlier_shift, outlier_scale)
    idx, params = idx[keep], params[keep]

    detected = np.zeros(count, dtype=bool)
    detected[idx] = True
    raw_boxes = np.full((count, 4), np.nan)
    raw_boxes[idx] = _corners(params)
    if not len(idx):
        empty = np.full((count, 4), np.nan)
        return FaceTrack(empty, empty.copy(), detected, detected.copy(), tried, raw_boxes, float(fps), fractions)

    t_all = np.arange(count)
    # np.interp holds the first/last value beyond the ends.
    filled = np.stack([np.interp(t_all, idx, params[:, k]) for k in range(4)], axis=1)
    # The median (~0.2 s) removes what the outlier test let through; the Gaussian (sigma = a
    # quarter of smooth_s, so +-2 sigma spans it: 1.9 frames at 25 fps, -3 dB near 1.8 Hz)
    # removes the Haar box's frame-to-frame jitter (~1% of the side) while following head
    # motion, which is slower. A Gaussian rather than Savitzky-Golay: no overshoot or ringing
    # around a filled gap, and more jitter removed for the same window.
    faces = _corners(_smooth(filled, _odd(0.2 * fps, 1), smooth_s * fps / 4))
    found = _run_lengths_ok(detected, max_gap)
    return FaceTrack(faces, mouth_boxes(faces, fractions), detected, found, tried, raw_boxes, float(fps), fractions)


# Detections a second of the sparse tracker: head motion in talking video is slow next to 5 Hz, and
# the interpolated boxes stay within a few percent of per-frame tracking (benchmarks/face_tracking_ms.py).
SPARSE_DETECTIONS_PER_S = 5.0


def track_faces_sparse(frames: Iterable[np.ndarray], fps: float = 25.0, detections_per_s: float = SPARSE_DETECTIONS_PER_S,
                       detector: FaceDetector | None = None, **options: Any) -> FaceTrack:
    """track_faces at a fraction of the cost: detections_per_s detections a second, boxes interpolated between.

    The detector (tracking_detector() unless given) runs its cheap local search on every
    round(fps / detections_per_s)-th frame and the last, its full search only to start or
    regain the track, and while it has no face on every frame (a face the full search finds on
    few frames is not skipped over); between detections the boxes are interpolated and smoothed
    as track_faces does. The mouth's place is measured on 6 frames instead of 12. About 1.5 ms a
    frame where per-frame tracking takes 8-12 (the seven shared videos, one busy core).
    """
    if not detections_per_s > 0:
        raise ValueError(f"detections_per_s must be > 0, got {detections_per_s}")
    stride = max(1, int(round(fps / detections_per_s)))
    options.setdefault("mouth_samples", 6)
    options.setdefault("lost_stride", 1)
    return track_faces(frames, detector=detector or tracking_detector(), stride=stride, fps=fps, **options)


def track_video(path: str | os.PathLike, detector: FaceDetector | None = None, stride: int = 1,
                sparse: bool = False, **options: Any) -> FaceTrack:
    """track_faces over a video file's frames, at the file's average frame rate (track_faces_sparse when sparse)."""
    from avlips.media.frames import iter_frames
    from avlips.media.probe import probe

    info = probe(path)
    if sparse:
        return track_faces_sparse(iter_frames(path), fps=info.fps or 25.0, detector=detector, label=str(path),
                                  **options)
    return track_faces(iter_frames(path), detector=detector, stride=stride, fps=info.fps or 25.0,
                       label=str(path), **options)


def require_face(track: FaceTrack, min_fraction: float = 0.5, label: str = "frames") -> None:
    """Raise NoFace unless a face was found in at least min_fraction of the track's frames."""
    fraction = track.found_fraction
    if not fraction >= min_fraction:
        raise NoFace(label, f"face found in {fraction:.0%} of frames (need {min_fraction:.0%})")


class WindowFaces:
    """The face of each window of one clip, windows taken in clip order: one cheap search per window.

    compose crops all frames of a window around one box. The window's middle frame is searched: near
    the previous window's face (the detector's detect_near), or for the clip's first face over the
    whole frame (the largest face); when the face is there, that box is the window's. Otherwise (the
    face moved, turned or is gone) every frame of the window is tracked as track_faces does, and the
    window has a face when it was detected on at least min_fraction of them: the median of those
    boxes, which the next window then searches near.
    """

    def __init__(self, detector: FaceDetector | None = None, min_fraction: float = 0.6, min_iou: float = 0.3,
                 label: str = "frames") -> None:
        self.detector = detector or tracking_detector()
        self.min_fraction = float(min_fraction)
        self.min_iou = float(min_iou)
        self.label = label
        self.previous: Box | None = None
        self.searches = self.tracked = 0  # windows settled by the one local search, by tracking every frame

    def box(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The window's face box (x1, y1, x2, y2) as float64; NoFace when it has none."""
        near = getattr(self.detector, "detect_near", None)
        if len(frames) and (self.previous is None or near is not None):
            middle = frames[len(frames) // 2]
            if self.previous is None:
                found = max(self.detector.detect(middle), key=lambda b: b.area, default=None)
            else:
                found = _continuing(self.previous, near(middle, self.previous), self.min_iou)
            if found is not None:
                self.searches += 1
                self.previous = found
                return found.as_array()
        self.tracked += 1
        track = track_faces(frames, detector=self.detector, refine_mouth=False, label=self.label)
        detected = np.asarray(track.detected, dtype=bool)
        if not detected.mean() >= self.min_fraction:
            self.previous = None
            raise NoFace(self.label, f"face found in {int(detected.sum())} of {len(detected)} window frames")
        face = np.median(np.asarray(track.faces)[detected], axis=0)
        self.previous = Box.from_array(face)
        return face


# ----------------------------------------------------------------------------------------------
# Face-centred square crops


def square_crop_boxes(boxes: np.ndarray, frame_shape: Sequence[int], scale: float = 1.3) -> np.ndarray:
    """Square int boxes (N, 4) around each box's centre, side scale x its longer side, kept in frame where they fit."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("face boxes must be finite (no NaN rows: frames without a face have no crop)")
    height, width = int(frame_shape[0]), int(frame_shape[1])
    side = np.maximum(1, np.rint(scale * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2

    def place(centre: np.ndarray, extent: int) -> np.ndarray:
        start = np.rint(centre - side / 2)
        # Fits: slide it inside. Too big: cover the whole frame extent, padding as little as possible.
        low = np.minimum(0, extent - side)
        high = np.maximum(0, extent - side)
        return np.clip(start, low, high)

    x1 = place(cx, width)
    y1 = place(cy, height)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.int64)


def square_crop_box(box: Box | Sequence[float] | np.ndarray, frame_shape: Sequence[int],
                    scale: float = 1.3) -> tuple[int, int, int, int]:
    """Square int box (x1, y1, x2, y2) around a face, side scale x its longer side, kept in frame where it fits."""
    corners = box.as_array() if isinstance(box, Box) else np.asarray(box, dtype=np.float64)
    x1, y1, x2, y2 = (int(v) for v in square_crop_boxes(corners, frame_shape, scale)[0])
    return x1, y1, x2, y2


_PAD_MODES = {"constant": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}


def crop_square(frame: np.ndarray, box: Sequence[int] | np.ndarray, size: int, pad: str = "constant") -> np.ndarray:
    """The square box's pixels resized to (size, size, C); parts outside the frame padded (black by default)."""
    x1, y1, x2, y2 = (int(v) for v in np.asarray(box).reshape(4))
    side = x2 - x1
    if side <= 0 or y2 - y1 != side:
        raise ValueError(f"crop box must be a non-empty square, got {(x1, y1, x2, y2)}")
    if pad not in _PAD_MODES:
        raise ValueError(f"pad must be one of {sorted(_PAD_MODES)}, got {pad!r}")
    height, width = frame.shape[:2]
    ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if ix2 <= ix1 or iy2 <= iy1:
        raise ValueError(f"crop box {(x1, y1, x2, y2)} lies outside the {width}x{height} frame")
    part = frame[iy1:iy2, ix1:ix2]
    if (ix1, iy1, ix2, iy2) != (x1, y1, x2, y2):
        part = cv2.copyMakeBorder(part, iy1 - y1, y2 - iy2, ix1 - x1, x2 - ix2, _PAD_MODES[pad], value=0)
    if side == size:
        return part.copy()  # never a view into the caller's frame
    # Area averaging does not alias when shrinking by 2x or more. Below that bilinear's taps reach
    # every source pixel: on the shared videos' crops (560-900 px to 500) the two agree to 55-58 dB
    # PSNR, and bilinear takes 0.4-0.5 ms where OpenCV's area path for such ratios takes 2.6-5.3.
    interpolation = cv2.INTER_AREA if side >= 2 * size else cv2.INTER_LINEAR
    out = cv2.resize(part, (size, size), interpolation=interpolation)
    return out if out.ndim == frame.ndim else out[..., None]


def crop_squares(frames: np.ndarray | Sequence[np.ndarray], boxes: np.ndarray, size: int,
                 pad: str = "constant") -> np.ndarray:
    """crop_square per frame: (T, H, W, C) frames and (T, 4) square boxes to (T, size, size, C)."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} crop boxes")
    if not len(boxes):
        channels = np.asarray(frames).shape[-1] if np.asarray(frames).ndim == 4 else 3
        return np.zeros((0, size, size, channels), dtype=np.uint8)
    return np.stack([crop_square(f, b, size, pad) for f, b in zip(frames, boxes)])

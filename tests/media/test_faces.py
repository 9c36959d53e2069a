"""Faces: detection on real media, tracking and smoothing with a scripted detector, square crops."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from avlips.media import faces
from avlips.media.errors import MediaError, NoFace, NoFrames
from avlips.media.faces import Box, FaceTrack

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "media"
VIDEOS = [
    "videoretalking_face_1.mp4",  # variable frame rate
    "videoretalking_face_2.mp4",
    "videoretalking_face_3.mp4",
    "videoretalking_face_4.mp4",  # background false positives beside the face
    "videoretalking_face_5.mp4",
    "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4",
    "sadtalker_WDA_KatieHill_000.mp4",
]
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real media not found at {SHARED}")


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# Real media


@pytest.fixture(scope="module")
def real_tracks() -> dict[str, tuple[FaceTrack, tuple[int, int]]]:
    """Stride-1 tracks of the real videos, computed once per module (shared by two tests)."""
    from avlips.media.probe import probe

    out = {}
    for name in VIDEOS:
        path = SHARED / "video" / name
        if not path.is_file():
            continue
        info = probe(path)
        out[name] = (faces.track_video(path, stride=1), (info.height, info.width))
        assert len(out[name][0]) == info.frames
    return out


@needs_shared
@pytest.mark.shared_media
@pytest.mark.slow
@pytest.mark.parametrize("name", VIDEOS)
def test_real_video_face_found_and_steady(name: str, real_tracks) -> None:
    assert name in real_tracks, f"{SHARED / 'video' / name} is missing"
    track, (height, width) = real_tracks[name]
    # Raw detections (stride 1, so every frame was tried), not interpolated boxes.
    assert track.attempted.all()
    assert track.detected.mean() >= 0.95, f"face detected in {track.detected.mean():.1%} of frames"
    shift = float(np.median(track.centre_shift()))
    assert shift < 0.02, f"median centre shift {shift:.2%} of the box side"
    # These are frontal talking heads: a face box of a third to two thirds of the frame, near the middle.
    side = track.faces[:, 2] - track.faces[:, 0]
    assert 0.25 * width < np.median(side) < 0.75 * width
    centre = (track.faces[:, :2] + track.faces[:, 2:]) / 2
    assert np.all(np.abs(centre[:, 0] / width - 0.5) < 0.25)
    # The mouth sits in the lower middle of its face box on every frame.
    m, f = track.mouths, track.faces
    assert np.all((m[:, 0] > f[:, 0]) & (m[:, 2] < f[:, 2]))
    assert np.all((m[:, 1] > f[:, 1] + 0.5 * (f[:, 3] - f[:, 1])) & (m[:, 3] < f[:, 3] + 0.15 * (f[:, 3] - f[:, 1])))


@needs_shared
@pytest.mark.shared_media
@pytest.mark.slow
def test_stride_matches_every_frame_on_real_video(real_tracks) -> None:
    from avlips.media.frames import iter_frames
    from avlips.media.probe import probe

    name = "videoretalking_face_4.mp4"
    assert name in real_tracks
    path = SHARED / "video" / name
    strided = faces.track_faces(iter_frames(path), stride=3, fps=probe(path).fps, label=str(path))
    full = real_tracks[name][0]
    assert strided.attempted.sum() == len(range(0, len(full), 3)) + (1 if (len(full) - 1) % 3 else 0)
    assert strided.found.all()
    ious = [faces._iou(a, b[None])[0] for a, b in zip(full.faces, strided.faces)]
    assert np.mean(ious) > 0.9 and np.min(ious) > 0.75


@needs_shared
@pytest.mark.shared_media
@pytest.mark.slow
@pytest.mark.parametrize("name", VIDEOS)
def test_sparse_tracking_meets_the_same_bar_on_real_video(name: str, real_tracks) -> None:
    """5 cheap searches a second and interpolation: the face still on >= 95% of frames, steady, on the per-frame boxes."""
    from avlips.media.frames import iter_frames
    from avlips.media.probe import probe

    assert name in real_tracks, f"{SHARED / 'video' / name} is missing"
    full = real_tracks[name][0]
    path = SHARED / "video" / name
    fps = probe(path).fps
    sparse = faces.track_faces_sparse(iter_frames(path), fps=fps, label=str(path))
    assert sparse.attempted.sum() <= len(full) / round(fps / 5) + 2  # searched on about every 5th frame only
    assert sparse.found_fraction >= 0.95, f"face found in {sparse.found_fraction:.1%} of frames"
    shift = float(np.median(sparse.centre_shift()))
    assert shift < 0.02, f"median centre shift {shift:.2%} of the box side"
    ious = np.array([faces._iou(a, b[None])[0] for a, b in zip(full.faces, sparse.faces)])
    assert ious.mean() > 0.9 and ious.min() > 0.75, (ious.mean(), ious.min())


@needs_shared
@pytest.mark.shared_media
@pytest.mark.slow
def test_window_faces_find_every_window_of_real_video() -> None:
    """compose's follower: one search per window, on the face that per-window tracking finds."""
    from avlips.media.frames import iter_frames
    from avlips.media.windows import window_starts

    path = SHARED / "video" / "videoretalking_face_4.mp4"  # background false positives beside the face
    frames = list(iter_frames(path))
    follower = faces.WindowFaces(label=str(path))
    for start in window_starts(len(frames), 10, 5):
        window = np.stack(frames[start:start + 5])
        box = follower.box(window)
        alone = faces.track_faces(window, refine_mouth=False)
        reference = np.median(alone.faces[alone.detected], axis=0)
        assert faces._iou(box, reference[None])[0] > 0.8
    assert follower.searches == 10 and follower.tracked == 0


@needs_shared
@pytest.mark.shared_media
@pytest.mark.parametrize("name", ["sadtalker_people_0.png", "hallo_ref_6.jpg", "musetalk_musk.png"])
def test_face_photo_found(name: str) -> None:
    image = _read_rgb(SHARED / "image" / name)
    height, width = image.shape[:2]
    box = faces.detect_face(image)
    assert box is not None
    assert 0.2 * min(height, width) < box.width < min(height, width)
    assert 0.25 < box.center[0] / width < 0.75 and 0.2 < box.center[1] / height < 0.8
    mouth = faces.mouth_box(box, image=image)
    assert box.x1 < mouth.x1 < mouth.x2 < box.x2
    assert box.center[1] < mouth.y1 < mouth.y2 < box.y2 + 0.15 * box.height


# --------------------------------------------------------------------------------------------
# No face, no frames


def _faceless_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    grey = np.full((360, 480, 3), 128, np.uint8)
    ramp = np.tile(np.linspace(0, 255, 480).astype(np.uint8)[None, :, None], (360, 1, 3))
    noise = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    checker = ((np.indices((360, 480)).sum(0) // 40) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    return [grey, ramp, noise, checker]


def test_no_face_in_synthetic_images() -> None:
    frames = _faceless_frames()
    for frame in frames:
        assert faces.detect_face(frame) is None
    track = faces.track_faces(frames * 3, label="faceless")
    assert not track.detected.any() and not track.found.any()
    assert np.isnan(track.faces).all() and np.isnan(track.mouths).all()
    with pytest.raises(NoFace) as info:
        faces.require_face(track, 0.5, label="faceless.mp4")
    assert isinstance(info.value, MediaError)
    assert info.value.path == "faceless.mp4"
    assert "face found in 0% of frames (need 50%)" in str(info.value)


def test_empty_frames_is_a_clear_error() -> None:
    with pytest.raises(NoFrames, match="clip.mp4: no frames"):
        faces.track_faces([], label="clip.mp4")
    with pytest.raises(NoFrames):
        faces.track_faces(iter(()), detector=ScriptedDetector({}))


# --------------------------------------------------------------------------------------------
# Tracking with a scripted detector: frames carry their index, the detector returns the script.


def _index_frames(count: int) -> list[np.ndarray]:
    return [np.array([[[t // 256, t % 256, 0]]], dtype=np.uint8) for t in range(count)]


class ScriptedDetector:
    """Returns the boxes scripted for the frame's index; records which frames it saw."""

    def __init__(self, script: dict[int, list[Box]]) -> None:
        self.script = script
        self.calls: list[int] = []

    def detect(self, frame_rgb: np.ndarray) -> list[Box]:
        t = int(frame_rgb[0, 0, 0]) * 256 + int(frame_rgb[0, 0, 1])
        self.calls.append(t)
        return list(self.script.get(t, []))


def _box(cx: float, cy: float, side: float, score: float = 50.0) -> Box:
    return Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, score)


def _truth(count: int) -> np.ndarray:
    """A slowly swaying head: (T, 3) centre x, centre y, side."""
    t = np.arange(count)
    return np.stack([320 + 40 * np.sin(2 * np.pi * t / 100), 240 + 15 * np.sin(2 * np.pi * t / 70),
                     200 + 10 * np.sin(2 * np.pi * t / 150)], axis=1)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def test_scripted_detector_is_a_face_detector() -> None:
    assert isinstance(ScriptedDetector({}), faces.FaceDetector)
    assert isinstance(faces.get_detector("haar"), faces.FaceDetector)


def test_smoothing_removes_jitter_and_outliers() -> None:
    count = 150
    truth = _truth(count)
    rng = np.random.default_rng(3)
    noisy = truth + rng.normal(0, 4.0, truth.shape)  # 2% of the face side, in centre and size
    script = {t: [_box(*noisy[t])] for t in range(count)}
    script[50] = [_box(truth[50, 0] + 70, truth[50, 1], truth[50, 2])]  # overlaps, but 0.35 sides off
    script[70] = [_box(60, 60, 120)]  # a lone false positive far from the face
    script[80] = [_box(560, 300, 260), _box(*noisy[80])]  # a larger false positive beside the face
    track = faces.track_faces(_index_frames(count), detector=ScriptedDetector(script), fps=25,
                              refine_mouth=False)

    assert not track.detected[[50, 70]].any() and track.detected[80]
    assert track.detected.sum() == count - 2 and track.found.all()
    centre = _centres(track.faces)
    side = track.faces[:, 2] - track.faces[:, 0]
    err = np.hypot(*(centre - truth[:, :2]).T) / truth[:, 2]
    raw_err = np.hypot(*(noisy[:, :2] - truth[:, :2]).T) / truth[:, 2]
    assert err[[50, 70, 80]].max() < 0.02
    assert np.sqrt(np.mean(err ** 2)) < 0.5 * np.sqrt(np.mean(raw_err ** 2))
    assert np.sqrt(np.mean((side / truth[:, 2] - 1) ** 2)) < 0.01
    # Jitter gone: frame-to-frame movement close to the true motion's, far below the raw input's.
    true_shift = np.median(np.hypot(*np.diff(truth[:, :2], axis=0).T) / truth[1:, 2])
    raw_shift = np.median(np.hypot(*np.diff(noisy[:, :2], axis=0).T) / noisy[1:, 2])
    assert np.median(track.centre_shift()) < min(raw_shift / 3, true_shift * 2)


def test_gaps_filled_and_ends_held() -> None:
    count = 120
    truth = np.stack([200 + 1.5 * np.arange(count), np.full(count, 240.0), np.full(count, 180.0)], axis=1)
    missing = set(range(0, 4)) | set(range(20, 26)) | set(range(60, 100)) | set(range(111, 120))
    script = {t: [_box(*truth[t])] for t in range(count) if t not in missing}
    track = faces.track_faces(_index_frames(count), detector=ScriptedDetector(script), fps=25,
                              max_gap_s=0.5, refine_mouth=False)
    gap = np.array(sorted(missing))
    assert not track.detected[gap].any() and track.detected.sum() == count - len(missing)
    # Short gaps (<= 0.5 s = 12 frames), inside and at both ends, are trusted; the 40-frame one is not.
    assert track.found[0:4].all() and track.found[20:26].all() and track.found[111:].all()
    assert not track.found[60:100].any()
    centre = _centres(track.faces)
    assert np.abs(centre[20:26, 0] - truth[20:26, 0]).max() < 1.0  # interpolated along the motion
    assert np.abs(centre[60:100, 0] - truth[60:100, 0]).max() < 2.0  # boxes exist, just untrusted
    assert np.abs(centre[0:3, 0] - truth[4, 0]).max() < 2.0  # held at the start
    assert np.abs(centre[113:, 0] - truth[110, 0]).max() < 2.0  # held at the end
    assert track.found_fraction == pytest.approx((count - 40) / count)


def test_stride_detects_every_nth_frame_and_the_last() -> None:
    count = 103
    truth = _truth(count)
    detector = ScriptedDetector({t: [_box(*truth[t])] for t in range(count)})
    track = faces.track_faces(_index_frames(count), detector=detector, stride=5, fps=25, refine_mouth=False)
    assert detector.calls == list(range(0, count, 5)) + [count - 1]
    assert np.array_equal(np.flatnonzero(track.attempted), detector.calls)
    assert np.array_equal(track.detected, track.attempted)
    assert track.found.all() and track.detection_rate == 1.0
    err = np.hypot(*(_centres(track.faces) - truth[:, :2]).T) / truth[:, 2]
    assert err.max() < 0.02


def test_lost_stride_searches_every_frame_until_there_is_a_face() -> None:
    count = 40
    truth = _truth(count)
    detector = ScriptedDetector({t: [_box(*truth[t])] for t in range(7, count)})
    track = faces.track_faces(_index_frames(count), detector=detector, stride=5, lost_stride=1, fps=25,
                              refine_mouth=False)
    # Frames 0-7 while there is no face, then every 5th from the first detection, and the last.
    assert detector.calls == [0, 1, 2, 3, 4, 5, 6, 7, 10, 15, 20, 25, 30, 35, 39]
    assert track.detected[7] and track.found[7:].all()


class ScriptedNearDetector(ScriptedDetector):
    """A ScriptedDetector with a local search: the scripted boxes near the given one; records those calls too."""

    def __init__(self, script: dict[int, list[Box]]) -> None:
        super().__init__(script)
        self.near_calls: list[int] = []

    def detect_near(self, frame_rgb: np.ndarray, box: Box) -> list[Box]:
        t = int(frame_rgb[0, 0, 0]) * 256 + int(frame_rgb[0, 0, 1])
        self.near_calls.append(t)
        return [b for b in self.script.get(t, []) if faces._iou(b.as_array(), box.as_array()[None])[0] > 0]


def test_window_faces_search_each_window_once_and_track_when_that_fails() -> None:
    frames = np.stack(_index_frames(60))
    face = _box(100, 100, 80)
    script = {t: [face] for t in range(60)}
    script[12] = []  # the middle of the third window: only its other frames show the face
    for t in range(20, 25):
        script[t] = []  # the fifth window has none
    detector = ScriptedNearDetector(script)
    follower = faces.WindowFaces(detector=detector, min_fraction=0.6, label="clip.mp4")
    # The first window: one full search of its middle frame; the second: one local search.
    assert np.allclose(follower.box(frames[0:5]), face.as_array()) and detector.calls == [2]
    assert np.allclose(follower.box(frames[5:10]), face.as_array()) and detector.near_calls == [7]
    # A miss on the middle frame: every frame of the window is tracked; 4 of 5 is enough.
    detector.calls.clear()
    assert np.allclose(follower.box(frames[10:15]), face.as_array(), atol=1.0)
    assert detector.calls and set(detector.calls) <= set(range(10, 15))
    assert follower.searches == 2 and follower.tracked == 1
    with pytest.raises(NoFace, match=r"clip\.mp4: face found in 0 of 5 window frames"):
        follower.box(frames[20:25])
    # After a window without a face the next one starts over with a full search.
    detector.calls.clear()
    assert np.allclose(follower.box(frames[30:35]), face.as_array()) and detector.calls == [32]


def test_track_restarts_on_the_largest_face_after_a_long_loss() -> None:
    count = 80
    script = {t: [_box(200, 200, 100)] for t in range(30)}
    script.update({t: [_box(450, 250, 150), _box(100, 100, 60)] for t in range(50, count)})
    track = faces.track_faces(_index_frames(count), detector=ScriptedDetector(script), fps=25, refine_mouth=False)
    assert track.detected[:30].all() and not track.detected[30:50].any() and track.detected[50:].all()
    assert np.allclose(_centres(track.faces)[60:], [450, 250], atol=1.0)


def test_require_face_message() -> None:
    count = 100
    script = {t: [_box(200, 200, 100)] for t in range(12)}
    track = faces.track_faces(_index_frames(count), detector=ScriptedDetector(script), fps=25, refine_mouth=False)
    assert track.found_fraction == pytest.approx(0.12)
    with pytest.raises(NoFace, match=r"clip\.mp4: face found in 12% of frames \(need 50%\)"):
        faces.require_face(track, 0.5, label="clip.mp4")
    faces.require_face(track, 0.1, label="clip.mp4")  # enough at a lower bar


# --------------------------------------------------------------------------------------------
# Registry and detector plumbing


def test_registry() -> None:
    assert "haar" in faces.available_detectors()
    haar = faces.get_detector("haar", detect_side=256, min_face=0.2)
    assert isinstance(haar, faces.HaarFaceDetector) and haar.detect_side == 256
    with pytest.raises(ValueError, match="unknown face detector 'nope'.*haar"):
        faces.get_detector("nope")
    with pytest.raises(FileNotFoundError):
        faces.get_detector("haar", cascade="no_such_cascade")

    @faces.register_detector("scripted-test")
    def make(script: dict | None = None) -> ScriptedDetector:
        return ScriptedDetector(script or {})

    assert isinstance(faces.get_detector("scripted-test"), ScriptedDetector)
    faces._REGISTRY.pop("scripted-test")


def test_haar_detector_pickles() -> None:
    haar = faces.get_detector("haar")
    haar.detect(_faceless_frames()[0])
    again = pickle.loads(pickle.dumps(haar))
    assert again.detect(_faceless_frames()[0]) == []


def test_mouth_box_fractions() -> None:
    face = Box(100, 50, 300, 250, 9)
    mouth = faces.mouth_box(face)
    fl, ft, fr, fb = faces.MOUTH_FRACTIONS
    assert (mouth.x1, mouth.y1, mouth.x2, mouth.y2) == pytest.approx((100 + 200 * fl, 50 + 200 * ft,
                                                                      100 + 200 * fr, 50 + 200 * fb))
    assert mouth.score == 9


# --------------------------------------------------------------------------------------------
# Square crops


def test_square_crop_box_centred_and_sized() -> None:
    x1, y1, x2, y2 = faces.square_crop_box(Box(300, 200, 400, 320), (720, 1280, 3), scale=1.5)
    assert x2 - x1 == y2 - y1 == 180  # 1.5 x the longer side (120)
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == (350, 260)


def test_square_crop_box_shifted_inside_at_borders() -> None:
    for box in ([0, 0, 100, 100], [560, 400, 640, 480], [-20, 200, 60, 280]):
        x1, y1, x2, y2 = faces.square_crop_box(box, (480, 640), scale=2.0)
        assert x2 - x1 == y2 - y1 == 2 * (box[2] - box[0])
        assert 0 <= x1 and x2 <= 640 and 0 <= y1 and y2 <= 480
    many = faces.square_crop_boxes(np.array([[0, 0, 100, 100], [560, 400, 640, 480.0]]), (480, 640), 2.0)
    assert many.dtype == np.int64 and many.tolist() == [[0, 0, 200, 200], [480, 320, 640, 480]]


def test_square_crop_box_padded_when_frame_too_small() -> None:
    frame = np.full((100, 300, 3), 200, np.uint8)
    box = faces.square_crop_box([120, 10, 200, 90], frame.shape, scale=1.5)  # side 120 > height 100
    x1, y1, x2, y2 = box
    assert x2 - x1 == y2 - y1 == 120 and y1 <= 0 and y2 >= 100 and 0 <= x1 and x2 <= 300
    crop = faces.crop_square(frame, box, 120)
    assert crop.shape == (120, 120, 3)
    top, bottom = -y1, y2 - 100
    assert top + bottom == 20
    assert (crop[:top] == 0).all() and (crop[120 - bottom:] == 0).all() and (crop[top:120 - bottom] == 200).all()
    edge = faces.crop_square(frame, box, 120, pad="edge")
    assert (edge == 200).all()


def test_crop_square_sizes_and_interpolation() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    box = (40, 20, 240, 220)
    small = faces.crop_square(frame, box, 64)
    large = faces.crop_square(frame, box, 256)
    same = faces.crop_square(frame, box, 200)
    region = frame[20:220, 40:240]
    assert small.shape == (64, 64, 3) and large.shape == (256, 256, 3) and small.dtype == np.uint8
    assert np.array_equal(small, cv2.resize(region, (64, 64), interpolation=cv2.INTER_AREA))
    assert np.array_equal(large, cv2.resize(region, (256, 256), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(same, region)
    with pytest.raises(ValueError, match="square"):
        faces.crop_square(frame, (0, 0, 100, 50), 64)
    with pytest.raises(ValueError, match="finite"):
        faces.square_crop_box([np.nan] * 4, frame.shape)


def test_crop_squares_batched() -> None:
    frames = np.stack([np.full((120, 160, 3), v, np.uint8) for v in (10, 20, 30)])
    frames[:, 50:70, 70:90] = 255
    boxes = faces.square_crop_boxes(np.array([[70, 50, 90, 70]] * 3, dtype=float), frames.shape[1:3], 2.0)
    crops = faces.crop_squares(frames, boxes, 32)
    assert crops.shape == (3, 32, 32, 3)
    assert [int(c[0, 0, 0]) for c in crops] == [10, 20, 30]
    assert (crops[:, 8:24, 8:24] == 255).all()
    with pytest.raises(ValueError):
        faces.crop_squares(frames, boxes[:2], 32)

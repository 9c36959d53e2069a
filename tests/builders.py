"""What the tests build: small media, stage inputs and stand-in research checkouts, made on the fly.

Test modules import these from here, never from one another: a helper hidden in another module's tests
is hard to find, and importing a test module runs (and collects) its tests a second time under its name.
Fixtures stay in conftest.py, which builds them from these.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# ---- the real media (../shared/media: placed beside the checkout in CI) ------------------------------

SHARED_MEDIA = Path(os.environ.get("AVLIPS_SHARED_MEDIA", REPO.parent / "shared" / "media"))


def shared_videos() -> list[Path]:
    """The real talking-face videos (empty when ../shared/media is absent)."""
    return sorted((SHARED_MEDIA / "video").glob("*.mp4")) if SHARED_MEDIA.is_dir() else []


# ---- the ffmpeg tests shell out to -------------------------------------------------------------------

def pinned_ffmpeg() -> str:
    """The ffmpeg binary tests shell out to: the one avlips pins, never PATH's.

    A distribution's older ffmpeg first on PATH (Debian 12's 5.1) lacks options the tests use,
    such as -display_rotation, and would make test media other than what avlips's encoder makes.
    """
    from avlips.media.ffmpeg_binary import pinned_path

    return pinned_path()


def run_ffmpeg(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the pinned ffmpeg quietly, overwriting outputs; a failure fails the test."""
    return subprocess.run([pinned_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", *args], check=True, **kwargs)


# ---- frames and sound --------------------------------------------------------------------------------

SPEECH_RATE = 16000  # the rate of audio.npy and of every speech signal below
WINDOW_AUDIO_SECONDS = 1.4  # a window's audio with context: 0.2 s + 2 x 0.6 s


def gradient_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames that differ from each other: a moving gradient with the frame number burnt in as a bar."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    base = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        frame = np.roll(base, i * 2, axis=1)
        frame[: max(2, height // 10), :, :] = 0
        frame[: max(2, height // 10), : int((i + 1) / n * width), :] = 255  # progress bar = frame id
        frames[i] = np.clip(frame, 0, 255)
    return frames


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone, (N,) or (C, N)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels)


def stereo_speech(seconds: float, rate: int) -> np.ndarray:
    """A stereo tone with a syllable-rate envelope, (2, N)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.4 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    return np.stack([mono, mono])


def speech(seed: int = 1, seconds: float = WINDOW_AUDIO_SECONDS) -> np.ndarray:
    """Synthetic voiced speech with pauses, int16 at SPEECH_RATE, as audio.npy stores it."""
    from avlips.media.synthetic import make_persona, speech_like_audio

    audio = speech_like_audio(make_persona(f"p{seed}", seed), seconds, SPEECH_RATE, seed)
    return np.round(audio * 32767).astype(np.int16)


def as_float(x: np.ndarray) -> np.ndarray:
    """int16 samples as float32 in [-1, 1)."""
    return x.astype(np.float32) / 32768.0


def write_vfr_video(path: Path, durations: list[int]) -> None:
    """An H.264 mp4 whose frames last the given numbers of 1/30 s ticks (a variable frame rate)."""
    import fractions

    import av

    frames = gradient_frames(len(durations), 48, 64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = fractions.Fraction(1, 30)
        stream.codec_context.time_base = fractions.Fraction(1, 30)
        pts = 0
        for frame_rgb, ticks in zip(frames, durations):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, 30)
            pts += ticks
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def talking_clip(path: Path, seed: int, seconds: float = 2.0, size: int = 96, fps: int = 25) -> Path:
    """A synthetic talking head with its speech (media.synthetic) written to path."""
    from avlips.media.encode import write_video
    from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio

    persona = make_persona(f"p{seed}", seed)
    audio = speech_like_audio(persona, seconds, 16000, seed)
    write_video(path, render_talking_clip(persona, audio, 16000, fps, size, seed), fps, audio, 16000)
    return path


# ---- stage inputs ------------------------------------------------------------------------------------

def clip_row(clip_id: str, path, identity: str, split: str = "test", label: int = 0, centred: bool = True,
             audio_path: str = "") -> dict:
    """A clips.parquet row for a video, its facts probed from the file."""
    from avlips.media.probe import probe

    info = probe(path)
    return {"clip_id": clip_id, "identity": identity, "path": str(path), "label": label, "split": split,
            "source": "test", "generator": "", "centred": centred, "fps": info.fps, "nominal_fps": info.nominal_fps,
            "frames": info.frames, "duration": info.duration, "width": info.width, "height": info.height,
            "rotation": info.rotation, "codec": info.codec, "variable_frame_rate": info.variable_frame_rate,
            "audio_path": audio_path, "audio_source": "track", "audio_rate": info.audio_rate,
            "audio_channels": info.audio_channels, "audio_duration": info.audio_duration}


def compose_params(folder: Path, rows: list[dict], **compose) -> dict:
    """Params for a small compose run over `rows` (written to folder/clips.parquet); keywords override."""
    from avlips.pipelines.corpus import CLIP_SCHEMA
    from avlips.pipelines.storage import write_parquet

    write_parquet(str(folder / "clips.parquet"), rows, CLIP_SCHEMA)
    settings = {"clips": str(folder / "clips.parquet"), "audio": "", "fakes": "", "n_windows": 4,
                "window_len": 5, "frame_size": 64, "samples_per_shard": 3, "max_failure_fraction": 1.0}
    settings.update(compose)
    return {"seed": 1, "compose": settings}


def tiny_corpus(base_dir: Path, identities: int = 6, clips_per_identity: int = 2, seed: int = 5) -> dict:
    """A demo corpus (1.2 s clips, 2 identities per split) through the corpus and denoise stages; its manifests."""
    from avlips.pipelines.corpus import run_corpus
    from avlips.pipelines.denoise import run_denoise

    params = {"seed": seed, "demo": {"identities": identities, "clips_per_identity": clips_per_identity,
                                     "duration_s": 1.2, "size": 96},
              "corpus": {"splits": {"train": 0.34, "val": 0.33, "test": 0.33}}, "denoise": {}}
    run_corpus("demo", str(base_dir / "corpus"), params)
    run_denoise(str(base_dir / "corpus" / "clips.parquet"), str(base_dir / "audio"), params)
    return {"clips": str(base_dir / "corpus" / "clips.parquet"), "audio": str(base_dir / "audio" / "audio.parquet")}


# ---- stand-in research checkouts (tests/generators/standins/) ---------------------------------------

STANDINS = Path(__file__).parent / "generators" / "standins"
# Wrapper name -> (stand-in folder, the script's path inside the checkout).
SCRIPTS = {"wav2lip_repo": ("wav2lip", "inference.py"), "talklip": ("talklip", "inf_demo.py"),
           "sadtalker": ("sadtalker", "inference.py"), "makeittalk": ("makeittalk", "main_end2end.py"),
           "latentsync": ("latentsync", "scripts/inference.py"), "musetalk": ("musetalk", "scripts/inference.py"),
           "videoretalking": ("videoretalking", "inference.py"), "ip_lap": ("ip_lap", "inference_single.py")}
# Files each checkout holds as its README lays it out: checkpoints and the files read at run time.
CHECKOUT_FILES = {
    "wav2lip_repo": ["checkpoints/wav2lip_gan.pth", "face_detection/detection/sfd/s3fd.pth"],
    "talklip": ["checkpoints/global_contrastive.pth", "config.yaml", "task_state.pt",
                "face_detection/detection/sfd/s3fd.pth"],
    "sadtalker": ["checkpoints/SadTalker_V0.0.2_256.safetensors", "checkpoints/mapping_00229-model.pth.tar",
                  "checkpoints/mapping_00109-model.pth.tar", "gfpgan/weights/alignment_WFLW_4HG.pth",
                  "gfpgan/weights/detection_Resnet50_Final.pth"],
    "makeittalk": ["examples/ckpt/ckpt_autovc.pth", "examples/ckpt/ckpt_content_branch.pth",
                   "examples/ckpt/ckpt_speaker_branch.pth", "examples/ckpt/ckpt_116_i2i_comb.pth",
                   "examples/dump/emb.pickle", "src/dataset/utils/STD_FACE_LANDMARKS.txt",
                   "src/dataset/utils/MEAN_STD_AUTOVC_RETRAIN_MEL_AU.txt", "src/autovc/retrain_version/obama_emb.txt"],
    "latentsync": ["checkpoints/latentsync_unet.pt", "checkpoints/whisper/tiny.pt", "configs/scheduler_config.json",
                   "latentsync/utils/mask.png", "checkpoints/auxiliary/models/buffalo_l/det_10g.onnx",
                   "checkpoints/auxiliary/models/buffalo_l/2d106det.onnx"],
    "musetalk": ["models/musetalkV15/unet.pth", "models/musetalkV15/musetalk.json", "models/sd-vae/config.json",
                 "models/whisper/config.json", "models/dwpose/dw-ll_ucoco_384.pth",
                 "models/face-parse-bisent/79999_iter.pth", "models/face-parse-bisent/resnet18-5c106cde.pth"],
    "videoretalking": [f"checkpoints/{name}" for name in (
        "DNet.pt", "LNet.pth", "ENet.pth", "face3d_pretrain_epoch_20.pth", "GPEN-BFR-512.pth", "RetinaFace-R50.pth",
        "ParseNet-latest.pth", "GFPGANv1.3.pth", "shape_predictor_68_face_landmarks.dat", "expression.mat",
        "BFM/similarity_Lm3D_all.mat")],
    "ip_lap": ["test/checkpoints/landmarkgenerator_checkpoint.pth", "test/checkpoints/renderer_checkpoint.pth"],
}
LATENTSYNC_CONFIG = "model:\n  cross_attention_dim: 384\ndata:\n  mask_image_path: latentsync/utils/mask.png\n"


def make_checkout(root: Path, kind: str) -> dict:
    """A stand-in checkout laid out as its README says, with dummy weights, under root; the wrapper's settings.

    Only `checkout` and `python` (plus test limits) are set, except TalkLip's checkpoint and AV-HuBERT
    checkout, which its README leaves to the user.
    """
    import cv2
    import soundfile

    folder, script = SCRIPTS[kind]
    checkout = root / f"{folder}_checkout"
    (checkout / script).parent.mkdir(parents=True)
    shutil.copy(STANDINS / folder / script, checkout / script)
    shutil.copy(STANDINS / "standin_media.py", checkout / "standin_media.py")
    settings: dict = {"checkout": str(checkout), "python": sys.executable, "timeout_s": 60,
                      "duration_tolerance_s": 0.5, "scratch_dir": str(root)}
    for name in CHECKOUT_FILES[kind]:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes(b"weights")
    if kind == "wav2lip_repo":
        (checkout / "temp").mkdir()
    elif kind == "talklip":
        (root / "av_hubert").mkdir()
        settings.update(checkpoint="checkpoints/global_contrastive.pth", avhubert_root=str(root / "av_hubert"))
    elif kind == "makeittalk":
        soundfile.write(str(checkout / "examples" / "M6_04_16k.wav"), stereo_speech(0.5, 44100)[0], 44100)
        cv2.imwrite(str(checkout / "examples" / "paint_boy.jpg"), np.full((256, 256, 3), 90, np.uint8))
    elif kind == "latentsync":
        (checkout / "configs" / "unet").mkdir(parents=True)
        (checkout / "configs" / "unet" / "stage2_512.yaml").write_text(LATENTSYNC_CONFIG)
    return settings


def file_tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under folder with its bytes (None for directories)."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def checkout_tree(checkout: Path) -> dict[str, bytes | None]:
    """The checkout's files and folders; Python's bytecode caches, which any import writes, are left out."""
    return {name: data for name, data in file_tree(checkout).items() if "__pycache__" not in name}


# ---- detectors installed for one test ----------------------------------------------------------------

class StandInEntryPoint:
    """What importlib.metadata hands out for an entry point: a name and a factory to load."""

    def __init__(self, name, factory):
        self.name, self._factory = name, factory

    def load(self):
        return self._factory


def register_detectors(monkeypatch, **factories) -> None:
    """Install test-only detectors beside the real ones, as an installed plugin would be."""
    import avlips.model.detectors as contract

    installed = contract.detector_entry_points
    monkeypatch.setattr(contract, "detector_entry_points",
                        lambda: {**installed(), **{n: StandInEntryPoint(n, f) for n, f in factories.items()}})

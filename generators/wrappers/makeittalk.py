"""MakeItTalk through its own research checkout (`main_end2end.py`): one still image driven by speech."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from avlips.generators.base import IMAGE
from avlips.generators.wrappers.base import FLAG, VALUE, ExternalCheckoutGenerator, GeneratorError, Job, still_image
from avlips.media.encode import write_video
from avlips.media.frames import iter_frames
from avlips.media.probe import VideoInfo, frame_times

CHECKPOINT_FILES = ("ckpt_autovc.pth", "ckpt_content_branch.pth", "ckpt_speaker_branch.pth", "ckpt_116_i2i_comb.pth")
JPG_STEM, WAV_STEM = "face", "speech"  # file names inside the job's private examples/
# Files main_end2end.py reads from its checkout besides the checkpoints (read in its code, 2020 release):
# the speaker embeddings its audio-to-landmark model opens unconditionally, and three tables under src/.
SPEAKER_EMBEDDINGS = "examples/dump/emb.pickle"
SOURCE_TABLES = ("src/dataset/utils/STD_FACE_LANDMARKS.txt", "src/dataset/utils/MEAN_STD_AUTOVC_RETRAIN_MEL_AU.txt",
                 "src/autovc/retrain_version/obama_emb.txt")
# examples/dump files the script deletes and rewrites each run: never linked from the checkout.
REWRITTEN_DUMP_PREFIX = "random_val_"
# Other examples/ files it reads when present (AutoVC_mel_Convertor('examples') reads its index).
READ_IF_PRESENT = ("filename_index.txt",)


class MakeItTalk(ExternalCheckoutGenerator):
    """Runs `main_end2end.py --jpg face.jpg` in an overlay whose `examples/` holds only this job's image and wav.

    Settings: `checkout`, `python`, `ckpt_dir` (default `examples/ckpt`; linked into the overlay as
    `examples/ckpt`, where the script's default checkpoint flags point), `checkpoint_files` (names
    checked in ckpt_dir), `speaker_embeddings` (default `examples/dump/emb.pickle`, the file the
    README has users download; linked into the private `examples/dump/`), `image_size` (the still is
    centre-cropped and resized to this square, default 256, the size the model works at), `fps`
    (frame rate of the fake, default 25; 0 keeps the script's 62.5), plus the common ones.

    The script reads the image and every `examples/*.wav`, overwrites those wavs with 16 kHz copies,
    reads `examples/dump/emb.pickle` and rewrites `examples/dump/random_val_*.pickle`, renders into
    `out.mp4` in its working directory and writes `examples/<jpg>_pred_fls_<wav>_audio_embed.mp4`:
    three 256x256 panels side by side (input, generated, landmarks) at 62.5 fps. The private
    `examples/` keeps the checkout's wavs untouched, holds links to everything else the script reads
    there, and makes the one mp4 ours; `out.mp4` is left out of the overlay so each job writes its own.
    The middle panel is the fake; it is resampled to `fps` by taking, for each output frame, the latest
    source frame shown at that time (no blending, which would add ghosting MakeItTalk never makes),
    because every other generator and every real clip is 25 fps and a 62.5 fps fake would be a
    frame-rate tell for the detector (a window of 5 frames would span 0.08 s, not 0.2 s).
    """

    name = "makeittalk"
    input_kind = IMAGE
    script = "main_end2end.py"
    options = {"amp_lip_x": VALUE, "amp_lip_y": VALUE, "amp_pos": VALUE, "close_input_face_mouth": FLAG}

    def ckpt_dir(self) -> Path | None:
        """Where the four checkpoints are."""
        return self.resolve(self.settings.get("ckpt_dir", "examples/ckpt"))

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The checkpoint directory and each checkpoint file in it."""
        folder = self.ckpt_dir()
        names = self.settings.get("checkpoint_files") or CHECKPOINT_FILES
        found: list[tuple[str, Path | None]] = [("ckpt_dir", folder)]
        if folder is not None:
            found += [(name, folder / name) for name in names]
        return found

    def speaker_embeddings(self) -> Path:
        """The downloaded speaker embeddings (emb.pickle)."""
        return self.resolve(self.settings.get("speaker_embeddings") or SPEAKER_EMBEDDINGS)

    def runtime_files(self) -> list[tuple[Path, str]]:
        """emb.pickle and the tables under src/ that main_end2end.py loads."""
        return ([(self.speaker_embeddings(), "the speaker embeddings main_end2end.py loads; download emb.pickle "
                                             "as MakeItTalk's README says")]
                + [(self.checkout / name, "a table main_end2end.py loads") for name in SOURCE_TABLES])

    def overlay_private(self) -> tuple[str, ...]:
        """A private examples/: the script reads and rewrites every examples/*.wav and writes its output there."""
        return ("examples",)

    def overlay_excluded(self) -> tuple[str, ...]:
        """The image-to-image step renders into out.mp4 in the working directory (and never removes it)."""
        return ("out.mp4",)

    def prepare(self, job: Job) -> None:
        """Fill the private examples/: the checkout's subfolders and read-only files, a dump/ with its
        emb.pickle, our jpg and wav."""
        examples = job.workdir / "examples"
        shared = self.checkout.resolve() / "examples"
        if shared.is_dir():
            for entry in shared.iterdir():
                # Other files (images, wavs, old outputs and pred_fls_*.txt) stay out: the script processes
                # every wav and landmark file it finds there and writes over its outputs.
                if entry.is_dir() and entry.name not in ("ckpt", "dump"):
                    os.symlink(entry, examples / entry.name, target_is_directory=True)
                elif entry.is_file() and entry.name in READ_IF_PRESENT:
                    os.symlink(entry, examples / entry.name)
        dump = examples / "dump"  # the script writes its intermediate landmark files here
        dump.mkdir()
        if (shared / "dump").is_dir():
            for entry in (shared / "dump").iterdir():
                if not entry.name.startswith(REWRITTEN_DUMP_PREFIX):
                    os.symlink(entry, dump / entry.name, target_is_directory=entry.is_dir())
        embeddings = dump / "emb.pickle"
        embeddings.unlink(missing_ok=True)  # the configured file wins over the checkout's
        os.symlink(self.speaker_embeddings().resolve(), embeddings)
        os.symlink(self.ckpt_dir().resolve(), examples / "ckpt", target_is_directory=True)
        size = int(self.settings.get("image_size") or 256)
        still_image(job.target, examples / f"{JPG_STEM}.jpg", size=size)
        # A copy, never a link: the script rewrites it in place, and job.audio is muxed afterwards.
        shutil.copyfile(job.audio, examples / f"{WAV_STEM}.wav")

    def command(self, job: Job) -> list[str]:
        """The image is named relative to examples/."""
        return ["--jpg", f"{JPG_STEM}.jpg"]

    def find_output(self, job: Job) -> Path:
        """examples/<jpgstem>_pred_fls_<wavstem>_audio_embed.mp4 in the overlay."""
        out = job.workdir / "examples" / f"{JPG_STEM}_pred_fls_{WAV_STEM}_audio_embed.mp4"
        if not out.is_file():
            raise self.missing_output(job, f"examples/{out.name}")
        return out

    def finish(self, job: Job, raw: Path, info: VideoInfo, out_path: Path) -> None:
        """Crop the middle panel, resample to `fps`, encode with the driving audio."""
        if info.width != 3 * info.height:
            raise GeneratorError(f"makeittalk: expected three square panels side by side, got "
                                 f"{info.width}x{info.height}")
        fps = float(self.settings.get("fps", 25.0) or 0.0) or info.fps
        picks = _resample_indices(frame_times(raw), info.duration, fps)
        panel = info.height

        def frames() -> Iterator[np.ndarray]:
            wanted = iter(picks)
            want = next(wanted, None)
            for index, frame in enumerate(iter_frames(raw)):
                while want is not None and want == index:
                    yield frame[:, panel:2 * panel]
                    want = next(wanted, None)
                if want is None:
                    return

        write_video(out_path, frames(), fps, audio=job.audio)


def _resample_indices(starts: np.ndarray, duration: float, fps: float) -> list[int]:
    """For each output frame k at k/fps, the index of the latest source frame starting at or before it."""
    count = max(1, int(round(duration * fps)))
    times = np.arange(count) / fps
    return np.clip(np.searchsorted(starts, times + 1e-6, side="right") - 1, 0, len(starts) - 1).tolist()

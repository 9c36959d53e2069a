"""MakeItTalk through its own research checkout (`main_end2end.py`): one still image driven by speech."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from avlips.generators.base import IMAGE
from avlips.generators.wrappers.base import FLAG, VALUE, ExternalCheckoutGenerator, GeneratorError, Job, still_image
from avlips.media.io import VideoInfo, frame_times, iter_frames, write_video

CHECKPOINT_FILES = ("ckpt_autovc.pth", "ckpt_content_branch.pth", "ckpt_speaker_branch.pth", "ckpt_116_i2i_comb.pth")
JPG_STEM, WAV_STEM = "face", "speech"  # file names inside the job's private examples/


class MakeItTalk(ExternalCheckoutGenerator):
    """Runs `main_end2end.py --jpg face.jpg` in an overlay whose `examples/` holds only this job's image and wav.

    Settings: `checkout`, `python`, `ckpt_dir` (default `examples/ckpt`; linked into the overlay as
    `examples/ckpt`, where the script's default checkpoint flags point), `checkpoint_files` (names
    checked in ckpt_dir), `image_size` (the still is centre-cropped and resized to this square,
    default 256, the size the model works at), `fps` (frame rate of the fake, default 25; 0 keeps
    the script's 62.5), plus the common ones.

    The script reads the image and every `examples/*.wav`, overwrites those wavs with 16 kHz copies and
    writes `examples/<jpg>_pred_fls_<wav>_audio_embed.mp4`: three 256x256 panels side by side (input,
    generated, landmarks) at 62.5 fps. The private `examples/` keeps the checkout's wavs untouched and
    makes the one mp4 ours. The middle panel is the fake; it is resampled to `fps` by taking, for each
    output frame, the latest source frame shown at that time (no blending, which would add ghosting
    MakeItTalk never makes), because every other generator and every real clip is 25 fps and a 62.5 fps
    fake would be a frame-rate tell for the detector (a window of 5 frames would span 0.08 s, not 0.2 s).
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

    def needs_overlay(self) -> bool:
        """The script reads and rewrites every examples/*.wav and writes its output there."""
        return True

    def overlay_private(self) -> tuple[str, ...]:
        """A private examples/."""
        return ("examples",)

    def prepare(self, job: Job) -> None:
        """Fill the private examples/: the checkout's subfolders, its own dump/, our jpg and wav."""
        examples = job.workdir / "examples"
        shared = self.checkout.resolve() / "examples"
        if shared.is_dir():
            for entry in shared.iterdir():
                # Files (other images, wavs, old outputs) stay out: the script would process every wav.
                if entry.is_dir() and entry.name not in ("ckpt", "dump"):
                    os.symlink(entry, examples / entry.name, target_is_directory=True)
        (examples / "dump").mkdir()  # the script keeps intermediate landmark files there
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

"""TalkLip through its own research checkout (`inf_demo.py`)."""
from __future__ import annotations

import re
from pathlib import Path

from avlips.generators.base import VIDEO
from avlips.generators.wrappers.base import VALUE, ExternalCheckoutGenerator, Job
from avlips.media.ffmpeg_binary import ffmpeg_exe

TALKLIP_FPS = 25  # the script and its AV-HuBERT front end work at 25 fps
# inf_demo.py loads the AV-HuBERT task state with torch.load(<path>); the published script names an
# absolute path on its authors' machine, the checkout ships the file at its root.
TASK_STATE_LOAD = re.compile(r"""torch\.load\(\s*['"]([^'"]*task_state\.pt)['"]""")


class TalkLip(ExternalCheckoutGenerator):
    """Runs `inf_demo.py --video_path V --wav_path A --ckpt_path CKPT --avhubert_root DIR --save_path S`.

    Settings: `checkout`, `python`, `checkpoint` (`global_only.pth` or `global_contrastive.pth`),
    `avhubert_root` (the AV-HuBERT checkout), `ffmpeg` (default: the ffmpeg avlips uses), `device`
    (default 0), plus the common ones. The script does not resample: it gets a 16 kHz mono wav, and a
    target that is not 25 fps is converted to 25 fps first. The output is `<save_path>.mp4` in the
    job's scratch, so jobs never share files.
    """

    name = "talklip"
    input_kind = VIDEO
    script = "inf_demo.py"
    options = {"device": VALUE}
    target_fps = TALKLIP_FPS  # the base class converts a target at another rate (re-encoded only then)

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The TalkLip checkpoint and the AV-HuBERT checkout."""
        return [("checkpoint", self.resolve(self.settings.get("checkpoint"))),
                ("avhubert_root", self.resolve(self.settings.get("avhubert_root")))]

    def task_state(self) -> Path:
        """The task_state.pt the checkout's inf_demo.py loads (relative paths from the checkout)."""
        try:
            found = TASK_STATE_LOAD.search((self.checkout / self.script).read_text(errors="replace"))
        except OSError:
            found = None
        return self.resolve(found.group(1) if found else "task_state.pt")

    def runtime_files(self) -> list[tuple[Path, str]]:
        """The encoder config and task state inf_demo.py loads, and the S3FD face detector weights."""
        state = self.task_state()
        why = "the AV-HuBERT task state inf_demo.py loads"
        if not state.is_relative_to(self.checkout):
            why += ("; the published script names its authors' absolute path: make that line load "
                    "'task_state.pt' (shipped at the checkout's root)")
        return [(self.checkout / "config.yaml", "the AV-HuBERT encoder config inf_demo.py loads"),
                (state, why),
                (self.checkout / "face_detection/detection/sfd/s3fd.pth",
                 "the S3FD face detector weights (TalkLip's README: put them there)")]

    def prepare(self, job: Job) -> None:
        """The target, already handed over at 25 fps (see target_fps)."""
        job.extra["video"] = Path(job.target.path).resolve()

    def command(self, job: Job) -> list[str]:
        """save_path is a stem: the script appends .mp4."""
        job.extra["save_path"] = job.scratch / "out" / "talklip"
        job.extra["save_path"].parent.mkdir()
        args = ["--video_path", str(job.extra["video"]), "--wav_path", str(job.audio),
                "--ckpt_path", str(self.checkpoints()[0][1].resolve()),
                "--avhubert_root", str(self.checkpoints()[1][1].resolve()),
                "--save_path", str(job.extra["save_path"]),
                "--ffmpeg", str(self.settings.get("ffmpeg") or ffmpeg_exe())]
        if "device" not in job.params and self.settings.get("device") is not None:
            args += ["--device", str(self.settings["device"])]
        return args

    def find_output(self, job: Job) -> Path:
        """<save_path>.mp4."""
        out = job.extra["save_path"].with_name(job.extra["save_path"].name + ".mp4")
        if not out.is_file():
            raise self.missing_output(job, out.name)
        return out


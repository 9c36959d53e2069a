"""Wav2Lip through its own research checkout (`inference.py`), for the published behaviour bit for bit."""
from __future__ import annotations

from pathlib import Path

from avlips.generators.base import VIDEO
from avlips.generators.wrappers.base import FLAG, VALUE, VALUES, ExternalCheckoutGenerator, Job


class Wav2LipRepo(ExternalCheckoutGenerator):
    """Runs `inference.py --checkpoint_path CKPT --face VIDEO --audio WAV --outfile OUT` in a private overlay.

    Settings: `checkout`, `python`, `checkpoint` (default `checkpoints/wav2lip_gan.pth`), `face_detector`
    (default `face_detection/detection/sfd/s3fd.pth`), plus the common ones (see ExternalCheckoutGenerator).
    The script keeps scratch files under `temp/` of its checkout, so each job runs in an overlay whose
    `temp/` is its own. Its output follows the target's resolution and fps and the audio's length.
    """

    name = "wav2lip_repo"
    input_kind = VIDEO
    script = "inference.py"
    options = {"static": FLAG, "fps": VALUE, "pads": VALUES, "face_det_batch_size": VALUE,
               "wav2lip_batch_size": VALUE, "resize_factor": VALUE, "crop": VALUES, "box": VALUES,
               "rotate": FLAG, "nosmooth": FLAG}

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The generator checkpoint and the S3FD face detector weights."""
        return [("checkpoint", self.resolve(self.settings.get("checkpoint", "checkpoints/wav2lip_gan.pth"))),
                ("face_detector", self.resolve(self.settings.get("face_detector",
                                                                  "face_detection/detection/sfd/s3fd.pth")))]

    def overlay_private(self) -> tuple[str, ...]:
        """A fresh temp/ per job: inference.py writes temp/result.avi and temp/temp.wav there."""
        return ("temp",)

    def command(self, job: Job) -> list[str]:
        """Absolute paths, since the script runs in the overlay."""
        job.extra["outfile"] = job.scratch / "result.mp4"
        return ["--checkpoint_path", str(self.checkpoints()[0][1].resolve()),
                "--face", str(Path(job.target.path).resolve()),
                "--audio", str(job.audio),
                "--outfile", str(job.extra["outfile"])]

    def find_output(self, job: Job) -> Path:
        """The --outfile we asked for."""
        out = job.extra["outfile"]
        if not out.is_file():
            raise self.missing_output(job, str(out.name))
        return out

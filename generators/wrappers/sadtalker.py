"""SadTalker through its own research checkout (`inference.py`)."""
from __future__ import annotations

from pathlib import Path

from avlips.generators.base import VIDEO
from avlips.generators.wrappers.base import FLAG, VALUE, ExternalCheckoutGenerator, Job, still_image

# Its preprocessing (src/face3d/extract_kp_videos_safe.py) builds facexlib's detector and aligner with
# model_rootpath='gfpgan/weights', relative to the working directory (the checkout).
FACE_WEIGHTS = ("alignment_WFLW_4HG.pth", "detection_Resnet50_Final.pth")
ENHANCER_WEIGHTS = "GFPGANv1.4.pth"


class SadTalker(ExternalCheckoutGenerator):
    """Runs `inference.py --driven_audio A --source_image IMG --result_dir DIR --checkpoint_dir C --size N`.

    Settings: `checkout`, `python`, `checkpoint_dir` (default `checkpoints` in the checkout), `size`
    (256 or 512: picks the `SadTalker_V0.0.2_<size>.safetensors` checked for), `source_frame` (which
    frame of a target video is the source image, default 0), plus the common ones. SadTalker animates
    one still (it moves the head itself), so a video target gives it one frame as PNG. It writes
    `<result_dir>/<timestamp>.mp4`: each job gets a fresh result_dir and takes the new mp4 there.
    """

    name = "sadtalker"
    input_kind = VIDEO
    script = "inference.py"
    options = {"preprocess": VALUE, "still": FLAG, "pose_style": VALUE, "expression_scale": VALUE,
               "enhancer": VALUE, "batch_size": VALUE, "cpu": FLAG}

    def size(self) -> int:
        """The model resolution asked for."""
        return int(self.settings.get("size") or 256)

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The checkpoint directory and the files in it the chosen size needs."""
        folder = self.resolve(self.settings.get("checkpoint_dir", "checkpoints"))
        found: list[tuple[str, Path | None]] = [("checkpoint_dir", folder)]
        if folder is not None:
            for name in (f"SadTalker_V0.0.2_{self.size()}.safetensors", "mapping_00229-model.pth.tar",
                         "mapping_00109-model.pth.tar"):
                found.append((name, folder / name))
        return found

    def runtime_files(self) -> list[tuple[Path, str]]:
        """The face detection and alignment weights (and GFPGAN's, with --enhancer gfpgan) in gfpgan/weights."""
        why = ("loaded by facexlib from gfpgan/weights (scripts/download_models.sh fetches it; "
               "without it facexlib downloads it into the checkout)")
        found = [(self.checkout / "gfpgan/weights" / name, why) for name in FACE_WEIGHTS]
        args = self.extra_args
        if "--enhancer" in args and args[args.index("--enhancer") + 1:][:1] == ["gfpgan"]:
            weights = self.checkout / "gfpgan/weights" / ENHANCER_WEIGHTS
            if not weights.exists() and (self.checkout / "checkpoints" / ENHANCER_WEIGHTS).exists():
                weights = self.checkout / "checkpoints" / ENHANCER_WEIGHTS  # its second place to look
            found.append((weights, "the GFPGAN weights --enhancer gfpgan loads (else downloaded at run time)"))
        return found

    def provenance_params(self, params: dict) -> dict:
        """Adds the size, which changes the output."""
        return {**super().provenance_params(params), "size": self.size()}

    def prepare(self, job: Job) -> None:
        """The source image: the target image itself, or one frame of the target video."""
        frame = int(self.settings.get("source_frame") or 0)
        job.extra["image"] = still_image(job.target, job.scratch / "in" / "source.png", frame=frame)

    def command(self, job: Job) -> list[str]:
        """A fresh result_dir per job, so the one new mp4 in it is ours."""
        job.extra["result_dir"] = job.scratch / "results"
        job.extra["result_dir"].mkdir()
        return ["--driven_audio", str(job.audio), "--source_image", str(job.extra["image"]),
                "--result_dir", str(job.extra["result_dir"]),
                "--checkpoint_dir", str(self.checkpoints()[0][1].resolve()), "--size", str(self.size())]

    def find_output(self, job: Job) -> Path:
        """The mp4 directly in result_dir; if the script left several, the last one written."""
        found = sorted(job.extra["result_dir"].glob("*.mp4"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        if not found:
            raise self.missing_output(job, "<result_dir>/<timestamp>.mp4")
        return found[-1]

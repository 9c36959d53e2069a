"""VideoRetalking through its own research checkout (`inference.py`)."""
from __future__ import annotations

from pathlib import Path

from avlips.generators.base import VIDEO
from avlips.generators.wrappers.base import FLAG, VALUE, VALUES, ExternalCheckoutGenerator, Job

# What inference.py loads from checkpoints/ (its README: "place them in ./checkpoints"), read in its code:
# the DNet/LNet/ENet and face3d flags' defaults, and the enhancers, detector, landmarks and 3DMM files
# it opens by fixed path.
CHECKPOINT_FILES = ("DNet.pt", "LNet.pth", "ENet.pth", "face3d_pretrain_epoch_20.pth", "GPEN-BFR-512.pth",
                    "RetinaFace-R50.pth", "ParseNet-latest.pth", "GFPGANv1.3.pth",
                    "shape_predictor_68_face_landmarks.dat", "expression.mat", "BFM")
UP_FACE_CHECKPOINT = "30_net_gen.pth"  # GANimation, loaded only when --up_face is not "original"


class VideoRetalking(ExternalCheckoutGenerator):
    """Runs `inference.py --face V --audio A --outfile O` in an overlay whose `temp/` is the job's own.

    Settings: `checkout`, `python`, plus the common ones; the checkpoints are read from the checkout's
    `checkpoints/` (the script opens most of them by fixed path). Options: `LNet_batch_size`,
    `img_size`, `pads`, `face_det_batch_size`, `one_shot`, `re_preprocess`.

    The script caches landmarks, 3DMM coefficients and the stabilised frames in `temp/` under the face
    file's name only, and reuses them when present: another video of the same name would get the
    first one's stale frames. A private `temp/` per job makes every run start clean (its `--tmp_dir`
    is a folder under `temp/`, left at its default). The outfile is an absolute path (a bare name
    crashes at its end). The output keeps the target's size and frame rate, one frame per audio step.
    Needs a CUDA GPU (its face detection runs on 'cuda:0').
    """

    name = "videoretalking"
    input_kind = VIDEO
    script = "inference.py"
    options = {"LNet_batch_size": VALUE, "img_size": VALUE, "pads": VALUES, "face_det_batch_size": VALUE,
               "one_shot": FLAG, "re_preprocess": FLAG}

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """Every file under checkpoints/ the script loads (GANimation's only with --up_face in extra_args)."""
        folder = self.checkout / "checkpoints"
        names = list(CHECKPOINT_FILES)
        if "--up_face" in self.extra_args:
            value = self.extra_args[self.extra_args.index("--up_face") + 1:][:1]
            if value != ["original"]:
                names.append(UP_FACE_CHECKPOINT)
        return [(name, folder / name) for name in names]

    def overlay_private(self) -> tuple[str, ...]:
        """A fresh temp/ per job: the script writes and reuses temp/<face name>_* caches there, so none is reused."""
        return ("temp",)

    def command(self, job: Job) -> list[str]:
        """Absolute paths, the outfile in a folder of the job's scratch."""
        job.extra["outfile"] = job.scratch / "out" / "result.mp4"
        return ["--face", str(Path(job.target.path).resolve()), "--audio", str(job.audio),
                "--outfile", str(job.extra["outfile"])]

    def find_output(self, job: Job) -> Path:
        """The --outfile we asked for."""
        out = job.extra["outfile"]
        if not out.is_file():
            raise self.missing_output(job, out.name)
        return out

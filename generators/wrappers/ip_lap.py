"""IP_LAP through its own research checkout (`inference_single.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from avlips.generators.base import VIDEO
from avlips.generators.wrappers.base import ExternalCheckoutGenerator, GeneratorError, Job, link_input
from avlips.media.encode import write_video
from avlips.media.frames import iter_frames
from avlips.media.probe import VideoInfo, probe

FACE_STEM = "face"  # the target's name in the job's inputs; the script names its output after it
OUT_NAME = "ip_lap_out"  # last part of --output_dir, which also names the script's scratch folder
# The script's output name: the input's file name minus its last 4 characters, then fixed constants
# (ref_img_N = 25 reference images, Nl = 15 reference landmarks, both hard-coded).
OUTPUT_SUFFIX = "result_N_25_Nl_15.mp4"


class IPLAP(ExternalCheckoutGenerator):
    """Runs `inference_single.py --input V --audio A --output_dir DIR --landmark_gen_checkpoint_path L
    --renderer_checkpoint_path R` in an overlay whose `tempfile_of_ip_lap_out/` is the job's own.

    Settings: `checkout`, `python`, `landmark_checkpoint` (default
    `test/checkpoints/landmarkgenerator_checkpoint.pth`), `renderer_checkpoint` (default
    `test/checkpoints/renderer_checkpoint.pth`), plus the common ones. No per-job options: its
    `--static` is parsed with type=bool (any text is true) and never read.

    The script keeps scratch in `./tempfile_of_<last part of --output_dir>` (shared by every output
    folder with that last part, and never removed), converts a non-25 fps input to
    `temp_25fps.avi` there and writes `<output_dir>/<input name minus 4 chars>result_N_25_Nl_15.mp4`:
    the sketch and the result side by side, twice the input's width, 25 fps. The right half is the
    fake; it is cropped and muxed with the driving audio. A still image input crashes the script, so
    this wrapper takes videos only. Needs a CUDA GPU (hard-coded .cuda()).
    """

    name = "ip_lap"
    input_kind = VIDEO
    script = "inference_single.py"
    options: dict[str, str] = {}

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The landmark generator and the renderer."""
        return [("landmark_checkpoint", self.resolve(self.settings.get(
                    "landmark_checkpoint", "test/checkpoints/landmarkgenerator_checkpoint.pth"))),
                ("renderer_checkpoint", self.resolve(self.settings.get(
                    "renderer_checkpoint", "test/checkpoints/renderer_checkpoint.pth")))]

    def overlay_private(self) -> tuple[str, ...]:
        """The scratch folder named after our output folder (relative to the working directory), fresh per job."""
        return (f"tempfile_of_{OUT_NAME}",)

    def prepare(self, job: Job) -> None:
        """The target under a known name (the output is named after it)."""
        job.extra["face"] = link_input(job, FACE_STEM)
        job.extra["output_dir"] = job.scratch / OUT_NAME

    def command(self, job: Job) -> list[str]:
        """Absolute paths (the script runs in the overlay)."""
        landmark, renderer = (path.resolve() for _, path in self.checkpoints())
        return ["--input", str(job.extra["face"]), "--audio", str(job.audio),
                "--output_dir", str(job.extra["output_dir"]),
                "--landmark_gen_checkpoint_path", str(landmark), "--renderer_checkpoint_path", str(renderer)]

    def find_output(self, job: Job) -> Path:
        """<output_dir>/face + result_N_25_Nl_15.mp4."""
        out = job.extra["output_dir"] / (job.extra["face"].name[:-4] + OUTPUT_SUFFIX)
        if not out.is_file():
            raise self.missing_output(job, f"{OUT_NAME}/{out.name}")
        return out

    def finish(self, job: Job, raw: Path, info: VideoInfo, out_path: Path) -> None:
        """The right half (the result), encoded with the driving audio."""
        width = probe(job.extra["face"]).width
        if info.width != 2 * width:
            raise GeneratorError(f"{self.name}: expected the sketch and the result side by side "
                                 f"({2 * width} wide for a {width}-wide target), got {info.width}x{info.height}")

        def right_halves() -> Iterator[np.ndarray]:
            for frame in iter_frames(raw):
                yield frame[:, width:]

        write_video(out_path, right_halves(), info.fps, audio=job.audio)

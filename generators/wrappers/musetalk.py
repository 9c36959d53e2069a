"""MuseTalk 1.5 through its own research checkout (`python -m scripts.inference` with a YAML task file)."""
from __future__ import annotations

from pathlib import Path

from avlips.generators.base import VIDEO
from avlips.generators.wrappers.base import FLAG, VALUE, ExternalCheckoutGenerator, GeneratorError, Job, link_input

FACE_STEM = "face"  # the target's name in the job's inputs; the script names its outputs after it
AUDIO_STEM = "audio"  # the driving wav's name (base class)
# What scripts/inference.py prints, and then carries on with exit status 0, when one of its tasks fails.
TASK_FAILED = "Error occurred during processing"
# Models it loads from its checkout besides the UNet (its download_weights.sh puts them there).
RUNTIME_MODELS = (
    ("models/dwpose/dw-ll_ucoco_384.pth", "the DWPose model its landmark step loads"),
    ("models/face-parse-bisent/79999_iter.pth", "the face-parsing model its blending step loads"),
    ("models/face-parse-bisent/resnet18-5c106cde.pth", "the face-parsing backbone"),
)


class MuseTalk(ExternalCheckoutGenerator):
    """Runs `python -m scripts.inference --inference_config TASKS.yaml --result_dir R --unet_model_path U
    --unet_config C --version v15` with a one-task YAML file written for the job.

    Settings: `checkout`, `python`, `unet_model` (default `models/musetalkV15/unet.pth`), `unet_config`
    (default `models/musetalkV15/musetalk.json`, what its download script fetches; the parser's own
    default is not), `version` (default `v15`), `vae_type` (default `sd-vae`: `models/sd-vae`),
    `whisper_dir` (default `models/whisper`), `ffmpeg_path` (the folder the script puts on PATH when
    it finds no ffmpeg there), plus the common ones. Options: `fps`, `batch_size`, `bbox_shift`,
    `use_float16`, `gpu_id`.

    Per task the script writes frames under `<result_dir>/<version>/`, a face-box cache at
    `<result_dir>/../<video stem>.pkl` (shared by every result_dir with that parent) and the video
    `<result_dir>/<version>/<video stem>_<audio stem>.mp4`, at the source's frame rate. Each job's
    result_dir is `<scratch>/musetalk/results`, so the cache lands in its own scratch. A task that fails
    is printed and the script still exits 0: no output plus that line is reported as the failure.
    """

    name = "musetalk"
    input_kind = VIDEO
    script = "scripts/inference.py"
    options = {"fps": VALUE, "batch_size": VALUE, "bbox_shift": VALUE, "use_float16": FLAG, "gpu_id": VALUE}

    def launch(self) -> list[str]:
        """It imports `musetalk` from the checkout root, so it must run as a module from there."""
        return ["-m", "scripts.inference"]

    def version_name(self) -> str:
        """The model version, which also names the output folder."""
        return str(self.settings.get("version") or "v15")

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The UNet weights and config, the VAE folder and the Whisper folder."""
        vae = f"models/{self.settings.get('vae_type') or 'sd-vae'}"
        return [("unet_model", self.resolve(self.settings.get("unet_model", "models/musetalkV15/unet.pth"))),
                ("unet_config", self.resolve(self.settings.get("unet_config", "models/musetalkV15/musetalk.json"))),
                ("vae", self.resolve(vae)),
                ("whisper_dir", self.resolve(self.settings.get("whisper_dir", "models/whisper")))]

    def runtime_files(self) -> list[tuple[Path, str]]:
        """DWPose and the face parser, which the script loads from fixed paths in its checkout."""
        return [(self.checkout / path, why) for path, why in RUNTIME_MODELS]

    def prepare(self, job: Job) -> None:
        """The target under a known name, and the task file naming it and the driving wav."""
        import yaml

        face = link_input(job, FACE_STEM)
        job.extra["tasks"] = job.scratch / "in" / "tasks.yaml"
        job.extra["tasks"].write_text(yaml.safe_dump({"task_0": {"video_path": str(face),
                                                                  "audio_path": str(job.audio)}}))
        job.extra["result_dir"] = job.scratch / "musetalk" / "results"
        job.extra["result_dir"].mkdir(parents=True)

    def command(self, job: Job) -> list[str]:
        """Absolute paths; optional folders only when set."""
        unet_model, unet_config, _, whisper = (path.resolve() for _, path in self.checkpoints())
        args = ["--inference_config", str(job.extra["tasks"]), "--result_dir", str(job.extra["result_dir"]),
                "--unet_model_path", str(unet_model), "--unet_config", str(unet_config),
                "--version", self.version_name()]
        if self.settings.get("vae_type"):
            args += ["--vae_type", str(self.settings["vae_type"])]
        if self.settings.get("whisper_dir"):
            args += ["--whisper_dir", str(whisper)]
        if self.settings.get("ffmpeg_path"):
            args += ["--ffmpeg_path", str(self.settings["ffmpeg_path"])]
        return args

    def find_output(self, job: Job) -> Path:
        """<result_dir>/<version>/face_audio.mp4; without it, the task failure the script printed."""
        out = job.extra["result_dir"] / self.version_name() / f"{FACE_STEM}_{AUDIO_STEM}.mp4"
        if out.is_file():
            return out
        log = job.scratch / "stdout.log"
        printed = log.read_text(errors="replace").splitlines() if log.exists() else []
        failed = [line.strip() for line in printed if TASK_FAILED in line]
        if failed:
            raise GeneratorError(f"{self.name}: {self.script} exited with code 0 but its task failed: {failed[-1]}; "
                                 f"stderr tail:\n{job.extra.get('stderr_tail', '')}")
        raise self.missing_output(job, f"{self.version_name()}/{out.name}")

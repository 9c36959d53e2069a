"""LatentSync 1.5 / 1.6 through its own research checkout (`python -m scripts.inference`)."""
from __future__ import annotations

from pathlib import Path

from avlips.generators.base import VIDEO, Readiness
from avlips.generators.wrappers.base import FLAG, VALUE, ExternalCheckoutGenerator, Job

# Whisper encoder the script loads, chosen by the UNet config's model.cross_attention_dim (read in its code).
WHISPER_BY_DIM = {384: "checkpoints/whisper/tiny.pt", 768: "checkpoints/whisper/small.pt"}
# InsightFace models its face detector loads from FaceAnalysis(root="checkpoints/auxiliary"): detection
# and 106-point landmarks of buffalo_l. When they are missing InsightFace downloads them into the checkout.
INSIGHTFACE_FILES = ("checkpoints/auxiliary/models/buffalo_l/det_10g.onnx",
                     "checkpoints/auxiliary/models/buffalo_l/2d106det.onnx")
DEFAULT_MASK = "latentsync/utils/mask.png"


class LatentSync(ExternalCheckoutGenerator):
    """Runs `python -m scripts.inference --unet_config_path C --inference_ckpt_path U --video_path V
    --audio_path A --video_out_path O --temp_dir T [--seed S]` in a private overlay.

    Settings: `checkout`, `python`, `unet_config` (default `configs/unet/stage2_512.yaml`, LatentSync
    1.6's; 1.5 uses `configs/unet/stage2.yaml`: the parser's own default `configs/unet.yaml` does not
    exist), `checkpoint` (default `checkpoints/latentsync_unet.pt`), `seed` (used when the caller sends
    none), plus the common ones. Options: `inference_steps`, `guidance_scale`, `enable_deepcache`.

    The script's `read_video` wipes and rewrites `./temp/video.mp4` in its working directory whatever
    `--temp_dir` says, so each job runs in an overlay with its own `temp/` and a `--temp_dir` in its
    scratch. The synthesize stage's per-fake seed is passed as `--seed` (the diffusion noise), so a
    fake can be made again. The input is re-encoded to 25 fps by the script; the output keeps the
    target's size. The VAE (`stabilityai/sd-vae-ft-mse`) comes from the Hugging Face cache, not the
    checkout. Needs a CUDA GPU (its face detector refuses the CPU).
    """

    name = "latentsync"
    input_kind = VIDEO
    script = "scripts/inference.py"
    options = {"inference_steps": VALUE, "guidance_scale": VALUE, "enable_deepcache": FLAG}

    def launch(self) -> list[str]:
        """It imports `latentsync` from the checkout root, so it must run as a module from there."""
        return ["-m", "scripts.inference"]

    def unet_config(self) -> Path | None:
        """The UNet config file."""
        return self.resolve(self.settings.get("unet_config", "configs/unet/stage2_512.yaml"))

    def checkpoints(self) -> list[tuple[str, Path | None]]:
        """The UNet config and weights."""
        return [("unet_config", self.unet_config()),
                ("checkpoint", self.resolve(self.settings.get("checkpoint", "checkpoints/latentsync_unet.pt")))]

    def _config(self) -> dict:
        """The UNet config as a dict; {} when it cannot be read (check() reports that)."""
        import yaml

        try:
            loaded = yaml.safe_load(self.unet_config().read_text())
        except (OSError, yaml.YAMLError, AttributeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def check(self) -> Readiness:
        """Also: a UNet config whose cross_attention_dim names a Whisper model the script knows."""
        state = super().check()
        if not state.ready:
            return state
        dim = (self._config().get("model") or {}).get("cross_attention_dim")
        if dim not in WHISPER_BY_DIM:
            return Readiness(False, f"{self.name}: {self.unet_config()}: model.cross_attention_dim is {dim!r}; "
                                    f"scripts/inference.py knows 384 (whisper tiny) and 768 (whisper small)")
        return state

    def runtime_files(self) -> list[tuple[Path, str]]:
        """The scheduler config, the Whisper model the UNet config asks for, the mask and InsightFace's models."""
        found = [(self.checkout / "configs" / "scheduler_config.json", "the DDIM scheduler config the script loads")]
        dim = (self._config().get("model") or {}).get("cross_attention_dim")
        if dim in WHISPER_BY_DIM:
            found.append((self.checkout / WHISPER_BY_DIM[dim],
                          f"the Whisper model for cross_attention_dim {dim} (LatentSync's README downloads it)"))
        mask = (self._config().get("data") or {}).get("mask_image_path") or DEFAULT_MASK
        found.append((self.resolve(mask), "the mouth mask the UNet config names"))
        found += [(self.checkout / name, "InsightFace's face model; run the checkout's own demo once, or unzip "
                                         "buffalo_l there, so parallel jobs do not each download it")
                  for name in INSIGHTFACE_FILES]
        return found

    def overlay_private(self) -> tuple[str, ...]:
        """A fresh temp/ per job: read_video writes ./temp/video.mp4 relative to its working directory."""
        return ("temp",)

    def command(self, job: Job) -> list[str]:
        """Absolute paths (the script runs in the overlay); the caller's seed, else the `seed` setting."""
        job.extra["outfile"] = job.scratch / "out" / "result.mp4"
        job.extra["outfile"].parent.mkdir()
        unet_config, checkpoint = (path.resolve() for _, path in self.checkpoints())
        args = ["--unet_config_path", str(unet_config), "--inference_ckpt_path", str(checkpoint),
                "--video_path", str(Path(job.target.path).resolve()), "--audio_path", str(job.audio),
                "--video_out_path", str(job.extra["outfile"]),
                "--temp_dir", str(job.scratch / "latentsync_temp")]
        seed = job.params.get("seed", self.settings.get("seed"))
        if seed is not None:
            args += ["--seed", str(int(seed))]
        return args

    def find_output(self, job: Job) -> Path:
        """The --video_out_path we asked for (the script ignores its final ffmpeg's exit status)."""
        out = job.extra["outfile"]
        if not out.is_file():
            raise self.missing_output(job, out.name)
        return out

"""Stand-in for LatentSync's scripts/inference.py (run as `python -m scripts.inference` from the checkout root).

The same arguments and the same files: the UNet config (whose cross_attention_dim picks the Whisper
model), configs/scheduler_config.json, the mask it names and InsightFace's buffalo_l models are read;
read_video wipes ./temp and writes ./temp/video.mp4 at 25 fps whatever --temp_dir says; then --temp_dir
is wiped and gets video.mp4 and a 16 kHz audio.wav, muxed to --video_out_path with the exit status ignored.
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time

import yaml

import standin_media as sm

parser = argparse.ArgumentParser(description="LatentSync stand-in")
parser.add_argument("--unet_config_path", type=str, default="configs/unet.yaml")
parser.add_argument("--inference_ckpt_path", type=str, required=True)
parser.add_argument("--video_path", type=str, required=True)
parser.add_argument("--audio_path", type=str, required=True)
parser.add_argument("--video_out_path", type=str, required=True)
parser.add_argument("--inference_steps", type=int, default=20)
parser.add_argument("--guidance_scale", type=float, default=1.5)
parser.add_argument("--temp_dir", type=str, default="temp")
parser.add_argument("--seed", type=int, default=1247)
parser.add_argument("--enable_deepcache", action="store_true")
args = parser.parse_args()

with open(args.unet_config_path) as handle:
    config = yaml.safe_load(handle)
if not os.path.exists(args.video_path):
    raise RuntimeError(f"Video path '{args.video_path}' not found")
if not os.path.exists(args.audio_path):
    raise RuntimeError(f"Audio path '{args.audio_path}' not found")
open("configs/scheduler_config.json").read()
dim = config["model"]["cross_attention_dim"]
whisper = {768: "checkpoints/whisper/small.pt", 384: "checkpoints/whisper/tiny.pt"}.get(dim)
if whisper is None:
    raise NotImplementedError("cross_attention_dim must be 768 or 384")
open(whisper, "rb").read()
open(args.inference_ckpt_path, "rb").read()
for model in ("det_10g.onnx", "2d106det.onnx"):
    open(os.path.join("checkpoints/auxiliary/models/buffalo_l", model), "rb").read()
open(config["data"].get("mask_image_path", "latentsync/utils/mask.png"), "rb").read()
sm.misbehave_early("latentsync")
sm.say(f"Initial seed: {args.seed}")

# read_video: ./temp in the working directory, whatever --temp_dir says.
if os.path.exists("temp"):
    shutil.rmtree("temp")
os.makedirs("temp", exist_ok=True)
# Command strings split on spaces, as the real read_video and final mux build them for a shell (no shell here).
subprocess.run(shlex.split(f"{sm.ffmpeg_exe()} -loglevel error -y -nostdin -i {args.video_path} -r 25 -crf 18 "
                           "temp/video.mp4"))
time.sleep(0.4)  # face alignment happens here in the real script: a shared ./temp is rewritten meanwhile
faces, _ = sm.load_face("temp/video.mp4")
samples, rate = sm.read_wav(args.audio_path)

if os.path.exists(args.temp_dir):
    shutil.rmtree(args.temp_dir)
os.makedirs(args.temp_dir, exist_ok=True)
video, audio = os.path.join(args.temp_dir, "video.mp4"), os.path.join(args.temp_dir, "audio.wav")
sm.encode(video, sm.talking(faces, samples, rate, 25.0), 25.0, misbehave=False)
subprocess.check_call([sm.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", args.audio_path, "-ar", "16000", audio])
if not sm.skip_or_break(args.video_out_path):
    # The exit status of the final mux is not checked, as in the real pipeline.
    subprocess.run(shlex.split(f"{sm.ffmpeg_exe()} -y -loglevel error -nostdin -i {video} -i {audio} -c:v libx264 "
                               f"-crf 18 -c:a aac {args.video_out_path}"))
    sm.say(f"Output video saved to {args.video_out_path}")
sys.exit(0)

"""Stand-in for TalkLip's inf_demo.py: the same arguments; writes <save_path>.mp4 at 25 fps."""
import argparse
import os
import sys

import soundfile

import standin_media as sm

parser = argparse.ArgumentParser(description="TalkLip stand-in")
parser.add_argument("--video_path", type=str, required=True)
parser.add_argument("--wav_path", type=str, required=True)
parser.add_argument("--ckpt_path", type=str, required=True)
parser.add_argument("--avhubert_root", type=str, required=True)
parser.add_argument("--save_path", type=str, default="tmp")
parser.add_argument("--ffmpeg", type=str, default="ffmpeg")
parser.add_argument("--device", type=int, default=0)
args = parser.parse_args()

if not os.path.isfile(args.ckpt_path):
    sys.exit(f"no checkpoint at {args.ckpt_path}")
if not os.path.isdir(args.avhubert_root):
    sys.exit(f"no AV-HuBERT checkout at {args.avhubert_root}")
open("config.yaml").read()  # build_encoder(): the encoder config, then the task state, from the working directory
open("task_state.pt", "rb").read()
open("face_detection/detection/sfd/s3fd.pth", "rb").read()
info = soundfile.info(args.wav_path)
if info.samplerate != 16000 or info.channels != 1:
    sys.exit(f"TalkLip stand-in: audio must be 16 kHz mono, got {info.samplerate} Hz x {info.channels}")
sm.misbehave_early("talklip")

faces, fps = sm.load_face(args.video_path)
if abs(fps - 25.0) > 0.01:
    sys.exit(f"TalkLip stand-in: video must be 25 fps, got {fps}")
samples, rate = sm.read_wav(args.wav_path)
sm.encode(args.save_path + ".mp4", sm.talking(faces, samples, rate, 25.0), 25.0, audio=args.wav_path,
          ffmpeg=args.ffmpeg)

"""Stand-in for MakeItTalk's main_end2end.py: the same arguments, the same files read and written.

Reads examples/<jpg>, every examples/*.wav (rewritten in place at 16 kHz), three tables under src/ and
examples/dump/emb.pickle; deletes and rewrites examples/dump/random_val_*.pickle; renders into out.mp4
in the working directory, then writes examples/<jpgstem>_pred_fls_<wavstem>_audio_embed.mp4:
input | generated | landmarks, 768x256, 62.5 fps.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np

import standin_media as sm

FPS = 62.5

parser = argparse.ArgumentParser(description="MakeItTalk stand-in")
parser.add_argument("--jpg", type=str, default="dali.jpg")
parser.add_argument("--close_input_face_mouth", action="store_true")
parser.add_argument("--load_AUTOVC_name", type=str, default="examples/ckpt/ckpt_autovc.pth")
parser.add_argument("--load_a2l_G_name", type=str, default="examples/ckpt/ckpt_speaker_branch.pth")
parser.add_argument("--load_a2l_C_name", type=str, default="examples/ckpt/ckpt_content_branch.pth")
parser.add_argument("--load_G_name", type=str, default="examples/ckpt/ckpt_116_i2i_comb.pth")
parser.add_argument("--amp_lip_x", type=float, default=2.0)
parser.add_argument("--amp_lip_y", type=float, default=2.0)
parser.add_argument("--amp_pos", type=float, default=0.5)
args = parser.parse_args()

for path in (args.load_AUTOVC_name, args.load_a2l_G_name, args.load_a2l_C_name, args.load_G_name):
    if not os.path.isfile(path):
        sys.exit(f"missing checkpoint {path}")
image = cv2.imread(os.path.join("examples", args.jpg), cv2.IMREAD_COLOR)
if image is None:
    sys.exit(f"cannot read examples/{args.jpg}")
sm.misbehave_early("makeittalk")
face = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)

wavs = sorted(glob.glob("examples/*.wav"))
for wav in wavs:  # in place, as the real script does
    subprocess.check_call([sm.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", wav, "-ar", "16000", "examples/tmp.wav"])
    shutil.copyfile("examples/tmp.wav", wav)
    open("src/autovc/retrain_version/obama_emb.txt").read()  # the AutoVC target speaker, per wav
if os.path.exists("examples/tmp.wav"):
    os.remove("examples/tmp.wav")
for name in ("fl", "fl_interp", "au", "gaze"):
    if os.path.exists(f"examples/dump/random_val_{name}.pickle"):
        os.remove(f"examples/dump/random_val_{name}.pickle")
for name in ("fl", "au", "gaze"):
    with open(f"examples/dump/random_val_{name}.pickle", "wb") as handle:
        handle.write(b"landmarks")

# The audio-to-landmark model: what its constructor opens, in its order.
for table in ("src/dataset/utils/STD_FACE_LANDMARKS.txt", "src/dataset/utils/MEAN_STD_AUTOVC_RETRAIN_MEL_AU.txt"):
    open(table).read()
with open(os.path.join("examples", "dump", "emb.pickle"), "rb") as handle:
    handle.read()

jpg_stem = os.path.splitext(args.jpg)[0]
for wav in wavs:
    samples, rate = sm.read_wav(wav)
    dots = np.zeros((256, 256, 3), np.uint8)
    for x in range(64, 200, 12):
        cv2.circle(dots, (x, 180), 2, (255, 255, 255), -1)
    panels = (np.concatenate([face, generated, dots], axis=1)
              for generated in sm.talking([face], samples, rate, FPS))
    sm.encode("out.mp4", panels, FPS, misbehave=False)  # the image-to-image step renders here, then muxes
    time.sleep(0.3)  # the real script spends this time before its ffmpeg step: a shared out.mp4 collides here
    wav_stem = os.path.splitext(os.path.basename(wav))[0]
    sm.mux("out.mp4", wav, f"examples/{jpg_stem}_pred_fls_{wav_stem}_audio_embed.mp4")

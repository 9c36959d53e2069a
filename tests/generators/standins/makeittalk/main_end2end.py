"""Stand-in for MakeItTalk's main_end2end.py: the same arguments and side effects on examples/.

Reads examples/<jpg> and every examples/*.wav, rewrites each wav in place at 16 kHz, and writes
examples/<jpgstem>_pred_fls_<wavstem>_audio_embed.mp4: input | generated | landmarks, 768x256, 62.5 fps.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np

import standin_media as sm

FPS = 62.5

parser = argparse.ArgumentParser(description="MakeItTalk stand-in")
parser.add_argument("--jpg", type=str, default="paint_boy.jpg")
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
if os.path.exists("examples/tmp.wav"):
    os.remove("examples/tmp.wav")
os.makedirs("examples/dump", exist_ok=True)
with open("examples/dump/random_val_fl.pickle", "wb") as handle:
    handle.write(b"landmarks")

jpg_stem = os.path.splitext(args.jpg)[0]
for wav in wavs:
    samples, rate = sm.read_wav(wav)
    dots = np.zeros((256, 256, 3), np.uint8)
    for x in range(64, 200, 12):
        cv2.circle(dots, (x, 180), 2, (255, 255, 255), -1)
    panels = (np.concatenate([face, generated, dots], axis=1)
              for generated in sm.talking([face], samples, rate, FPS))
    wav_stem = os.path.splitext(os.path.basename(wav))[0]
    sm.encode(f"examples/{jpg_stem}_pred_fls_{wav_stem}_audio_embed.mp4", panels, FPS, audio=wav)

"""Stand-in for SadTalker's inference.py: the same arguments; writes <result_dir>/<timestamp>.mp4 at 25 fps."""
import argparse
import os
import shutil
import sys
import time

import cv2

import standin_media as sm

parser = argparse.ArgumentParser(description="SadTalker stand-in")
parser.add_argument("--driven_audio", required=True)
parser.add_argument("--source_image", required=True)
parser.add_argument("--result_dir", required=True)
parser.add_argument("--checkpoint_dir", default="./checkpoints")
parser.add_argument("--size", type=int, default=256, choices=[256, 512])
parser.add_argument("--preprocess", default="crop", choices=["crop", "extcrop", "resize", "full", "extfull"])
parser.add_argument("--still", action="store_true")
parser.add_argument("--pose_style", type=int, default=0)
parser.add_argument("--expression_scale", type=float, default=1.0)
parser.add_argument("--enhancer", type=str, default=None)
parser.add_argument("--batch_size", type=int, default=2)
parser.add_argument("--cpu", action="store_true")
args = parser.parse_args()

for name in (f"SadTalker_V0.0.2_{args.size}.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"):
    if not os.path.isfile(os.path.join(args.checkpoint_dir, name)):
        sys.exit(f"missing checkpoint {name} in {args.checkpoint_dir}")
image = cv2.imread(args.source_image, cv2.IMREAD_COLOR)
if image is None:
    sys.exit(f"cannot read the source image {args.source_image}")
for name in ("alignment_WFLW_4HG.pth", "detection_Resnet50_Final.pth"):
    open(os.path.join("gfpgan/weights", name), "rb").read()  # facexlib, from the working directory
sm.misbehave_early("sadtalker")

save_dir = os.path.join(args.result_dir, time.strftime("%Y_%m_%d_%H.%M.%S"))
os.makedirs(save_dir, exist_ok=True)
shutil.copyfile(args.source_image, os.path.join(save_dir, "first_frame.png"))  # intermediates live here
samples, rate = sm.read_wav(args.driven_audio)
inner = os.path.join(save_dir, "result.mp4")
sm.encode(inner, sm.talking([image], samples, rate, 25.0, size=args.size), 25.0, audio=args.driven_audio)
if os.path.exists(inner):
    shutil.move(inner, save_dir + ".mp4")

"""Stand-in for VideoRetalking's inference.py: the same arguments, checkpoints and caches.

Caches landmarks, coefficients and the stabilised frames in temp/ keyed only by the face file's name and
reuses them when present (so another video of the same name gets the first one's frames); renders into
temp/<tmp_dir>/result.mp4 and muxes it with the audio to --outfile, whose folder it creates (a bare
file name crashes there).
"""
import argparse
import os
import sys

import numpy as np

import standin_media as sm

parser = argparse.ArgumentParser(description="VideoRetalking stand-in")
parser.add_argument("--DNet_path", type=str, default="checkpoints/DNet.pt")
parser.add_argument("--LNet_path", type=str, default="checkpoints/LNet.pth")
parser.add_argument("--ENet_path", type=str, default="checkpoints/ENet.pth")
parser.add_argument("--face3d_net_path", type=str, default="checkpoints/face3d_pretrain_epoch_20.pth")
parser.add_argument("--face", type=str, required=True)
parser.add_argument("--audio", type=str, required=True)
parser.add_argument("--exp_img", type=str, default="neutral")
parser.add_argument("--outfile", type=str)
parser.add_argument("--fps", type=float, default=25.0)
parser.add_argument("--pads", nargs="+", type=int, default=[0, 20, 0, 0])
parser.add_argument("--face_det_batch_size", type=int, default=4)
parser.add_argument("--LNet_batch_size", type=int, default=16)
parser.add_argument("--img_size", type=int, default=384)
parser.add_argument("--crop", nargs="+", type=int, default=[0, -1, 0, -1])
parser.add_argument("--box", nargs="+", type=int, default=[-1, -1, -1, -1])
parser.add_argument("--nosmooth", default=False, action="store_true")
parser.add_argument("--static", default=False, action="store_true")
parser.add_argument("--up_face", default="original")
parser.add_argument("--one_shot", action="store_true")
parser.add_argument("--without_rl1", default=False, action="store_true")
parser.add_argument("--tmp_dir", type=str, default="temp")
parser.add_argument("--re_preprocess", action="store_true")
args = parser.parse_args()

os.makedirs(os.path.join("temp", args.tmp_dir), exist_ok=True)
for name in ("GPEN-BFR-512.pth", "RetinaFace-R50.pth", "ParseNet-latest.pth", "GFPGANv1.3.pth"):
    open(os.path.join("checkpoints", name), "rb").read()  # the enhancers, loaded first
base_name = args.face.split("/")[-1]
if not os.path.isfile(args.face):
    raise ValueError("--face argument must be a valid path to video/image file")
faces, fps = sm.load_face(args.face)
open("checkpoints/shape_predictor_68_face_landmarks.dat", "rb").read()
sm.misbehave_early("videoretalking")

if not os.path.isfile("temp/" + base_name + "_landmarks.txt") or args.re_preprocess:
    np.savetxt("./temp/" + base_name + "_landmarks.txt", np.zeros((len(faces), 4)))
if not os.path.isfile("temp/" + base_name + "_coeffs.npy") or args.re_preprocess:
    open(args.face3d_net_path, "rb").read()
    os.listdir("checkpoints/BFM")
    np.save("temp/" + base_name + "_coeffs.npy", np.zeros((len(faces), 260), np.float32))
open("checkpoints/expression.mat", "rb").read()
open(args.DNet_path, "rb").read()
open(args.LNet_path, "rb").read()
open(args.ENet_path, "rb").read()
if not os.path.isfile("temp/" + base_name + "_stablized.npy") or args.re_preprocess:
    np.save("temp/" + base_name + "_stablized.npy", np.stack(faces))
else:
    sm.say("[Step 3] Using saved stabilized video.")
    faces = list(np.load("temp/" + base_name + "_stablized.npy"))

samples, rate = sm.read_wav(args.audio)
result = "temp/{}/result.mp4".format(args.tmp_dir)
sm.encode(result, sm.talking(faces, samples, rate, fps), fps, misbehave=False)
if not os.path.isdir(os.path.dirname(args.outfile)):
    os.makedirs(os.path.dirname(args.outfile), exist_ok=True)
sm.mux(result, args.audio, args.outfile)
print("outfile:", args.outfile)
sys.exit(0)

"""Stand-in for Wav2Lip's inference.py: the same arguments, the same files written (temp/result.avi, then --outfile)."""
import argparse
import os
import subprocess
import sys
import time

import cv2

import standin_media as sm

parser = argparse.ArgumentParser(description="Wav2Lip stand-in")
parser.add_argument("--checkpoint_path", type=str, required=True)
parser.add_argument("--face", type=str, required=True)
parser.add_argument("--audio", type=str, required=True)
parser.add_argument("--outfile", type=str, default="results/result_voice.mp4")
parser.add_argument("--static", action="store_true")
parser.add_argument("--fps", type=float, default=25.0)
parser.add_argument("--pads", nargs="+", type=int, default=[0, 10, 0, 0])
parser.add_argument("--face_det_batch_size", type=int, default=16)
parser.add_argument("--wav2lip_batch_size", type=int, default=128)
parser.add_argument("--resize_factor", type=int, default=1)
parser.add_argument("--crop", nargs="+", type=int, default=[0, -1, 0, -1])
parser.add_argument("--box", nargs="+", type=int, default=[-1, -1, -1, -1])
parser.add_argument("--rotate", action="store_true")
parser.add_argument("--nosmooth", action="store_true")
args = parser.parse_args()

if not os.path.isfile(args.checkpoint_path):
    sys.exit(f"no checkpoint at {args.checkpoint_path}")
if not os.path.isfile("face_detection/detection/sfd/s3fd.pth"):
    sys.exit("S3FD weights missing: face_detection/detection/sfd/s3fd.pth")
if not os.path.isfile(args.face):
    raise ValueError("--face argument must be a valid path to video/image file")
sm.misbehave_early("wav2lip")

faces, fps = sm.load_face(args.face)
if len(faces) == 1 and args.face.lower().endswith((".jpg", ".jpeg", ".png")):
    fps = args.fps
audio = args.audio
if not audio.endswith(".wav"):
    subprocess.check_call([sm.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", audio, "temp/temp.wav"])
    audio = "temp/temp.wav"
samples, rate = sm.read_wav(audio)

h, w = faces[0].shape[:2]
writer = cv2.VideoWriter("temp/result.avi", cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
if not writer.isOpened():
    sys.exit("cannot open temp/result.avi for writing")
for frame in sm.talking(faces, samples, rate, fps):
    writer.write(frame)
writer.release()
sm.say("stand-in: wrote temp/result.avi")
time.sleep(0.5)  # the real script spends this time before its ffmpeg step: a shared temp/ collides here

# Like the real script: the muxed output is made from whatever temp/result.avi holds now.
collected, _ = sm.load_face("temp/result.avi")
sm.encode(args.outfile, collected, fps, audio=audio)

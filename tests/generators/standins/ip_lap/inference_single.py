"""Stand-in for IP_LAP's inference_single.py: the same arguments and files.

Scratch goes to ./tempfile_of_<last part of --output_dir> in the working directory (never removed); a
non-25 fps input is converted to temp_25fps.avi there; result.avi holds the sketch and the result side
by side (twice the input's width), muxed with the audio to
<output_dir>/<input name minus its last 4 characters>result_N_25_Nl_15.mp4. A still image crashes.
"""
import argparse
import os
import shlex
import subprocess
import time

import cv2
import numpy as np

import standin_media as sm

parser = argparse.ArgumentParser()
parser.add_argument("--input", "--input_template_video", type=str, default="./test/template_video/129.mp4")
parser.add_argument("--audio", type=str, default="./test/template_video/audio2.wav")
parser.add_argument("--output_dir", type=str, default="./test_result")
parser.add_argument("--static", type=bool, help="whether only use  the first frame for inference", default=False)
parser.add_argument("--landmark_gen_checkpoint_path", type=str,
                    default="./test/checkpoints/landmarkgenerator_checkpoint.pth")
parser.add_argument("--renderer_checkpoint_path", type=str, default="./test/checkpoints/renderer_checkpoint.pth")
args = parser.parse_args()

ref_img_N, Nl = 25, 15
output_dir = args.output_dir
temp_dir = "tempfile_of_{}".format(output_dir.split("/")[-1])
os.makedirs(output_dir, exist_ok=True)
os.makedirs(temp_dir, exist_ok=True)
input_video_path = args.input
outfile_path = os.path.join(output_dir, "{}_N_{}_Nl_{}.mp4".format(input_video_path.split("/")[-1][:-4] + "result",
                                                                   ref_img_N, Nl))
open(args.landmark_gen_checkpoint_path, "rb").read()
open(args.renderer_checkpoint_path, "rb").read()
sm.misbehave_early("ip_lap")

if not os.path.isfile(input_video_path):
    raise ValueError("the input video file does not exist")
elif input_video_path.split(".")[1] in ["jpg", "png", "jpeg"]:
    frames = [cv2.imread(input_video_path)]
else:
    capture = cv2.VideoCapture(input_video_path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    if fps != 25:
        # One string split on spaces, as the real script builds it for a shell: a path with spaces breaks it there too.
        subprocess.call(shlex.split(f"{sm.ffmpeg_exe()} -loglevel error -y -i {input_video_path} -r 25 "
                                    f"{temp_dir}/temp_25fps.avi"))
        input_video_path = "{}/temp_25fps.avi".format(temp_dir)
    frames, fps = sm.load_face(input_video_path)
    assert round(fps) == 25, fps
samples, rate = sm.read_wav(args.audio)
height, width = frames[0].shape[:2]
sketch = np.zeros_like(frames[0])
for x in range(width // 4, 3 * width // 4, 6):
    cv2.circle(sketch, (x, int(height * 0.75)), 1, (255, 255, 255), -1)
# A still image has no fps here: NameError, as in the real script.
writer = cv2.VideoWriter(f"{temp_dir}/result.avi", cv2.VideoWriter_fourcc(*"MJPG"), fps, (2 * width, height))
for frame in sm.talking(frames, samples, rate, fps):
    writer.write(np.concatenate([sketch, frame], axis=1))
writer.release()
time.sleep(0.3)  # the real script's ffmpeg step comes here: a shared scratch folder is rewritten meanwhile
rendered, _ = sm.load_face(f"{temp_dir}/result.avi")
sm.encode(outfile_path, rendered, fps, audio=args.audio)
print("succeed output results to:", outfile_path)

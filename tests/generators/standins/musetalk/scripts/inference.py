"""Stand-in for MuseTalk 1.5's scripts/inference.py (run as `python -m scripts.inference` from the checkout root).

The same arguments and the same files: the models are loaded from the checkout first; each task of the
YAML --inference_config extracts frames to <result_dir>/<version>/<video stem>/, keeps a face-box cache
at <result_dir>/../<video stem>.pkl, renders into <result_dir>/<version>/<output name>/ and writes
<result_dir>/<version>/<video stem>_<audio stem>.mp4 (or the task's result_name) at the source's fps.
A task that fails is printed and the script exits 0 (STANDIN_MODE=task_error makes the task fail).
"""
import argparse
import glob
import os
import pickle
import shlex
import shutil
import subprocess
import time

import cv2
import yaml

import standin_media as sm


def load_all_model(args):
    """What the real script loads before any task (a missing file is an exception, exit 1)."""
    for path in (args.unet_model_path, args.unet_config, os.path.join("models", args.vae_type, "config.json"),
                 os.path.join(args.whisper_dir, "config.json"), "models/dwpose/dw-ll_ucoco_384.pth",
                 "models/face-parse-bisent/79999_iter.pth", "models/face-parse-bisent/resnet18-5c106cde.pth"):
        open(path, "rb").read()


def main(args):
    load_all_model(args)
    sm.misbehave_early("musetalk")
    with open(args.inference_config) as handle:
        tasks = yaml.safe_load(handle)
    for task_id in tasks:
        try:
            video_path = tasks[task_id]["video_path"]
            audio_path = tasks[task_id]["audio_path"]
            if "result_name" in tasks[task_id]:
                args.output_vid_name = tasks[task_id]["result_name"]
            input_basename = os.path.basename(video_path).split(".")[0]
            audio_basename = os.path.basename(audio_path).split(".")[0]
            output_basename = f"{input_basename}_{audio_basename}"
            temp_dir = os.path.join(args.result_dir, f"{args.version}")
            os.makedirs(temp_dir, exist_ok=True)
            result_img_save_path = os.path.join(temp_dir, output_basename)
            crop_coord_save_path = os.path.join(args.result_dir, "../", input_basename + ".pkl")
            os.makedirs(result_img_save_path, exist_ok=True)
            if args.output_vid_name is None:
                output_vid_name = os.path.join(temp_dir, output_basename + ".mp4")
            else:
                output_vid_name = os.path.join(temp_dir, args.output_vid_name)

            save_dir_full = os.path.join(temp_dir, input_basename)
            os.makedirs(save_dir_full, exist_ok=True)
            # The real script runs this string through a shell; split the same way here, without one.
            subprocess.call(shlex.split(f"{sm.ffmpeg_exe()} -v fatal -i {video_path} -start_number 0 "
                                        f"{save_dir_full}/%08d.png"))
            input_img_list = sorted(glob.glob(os.path.join(save_dir_full, "*.[jpJP][pnPN]*[gG]")))
            capture = cv2.VideoCapture(video_path)
            fps = capture.get(cv2.CAP_PROP_FPS)
            capture.release()
            if sm.mode() == "task_error":
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

            frames = [cv2.imread(path) for path in input_img_list]
            if os.path.exists(crop_coord_save_path) and args.use_saved_coord:
                with open(crop_coord_save_path, "rb") as handle:
                    coord_list = pickle.load(handle)
            else:
                coord_list = [(0, 0, frame.shape[1], frame.shape[0]) for frame in frames]
                with open(crop_coord_save_path, "wb") as handle:
                    pickle.dump(coord_list, handle)
            time.sleep(0.3)  # inference: a result folder shared with another job is rewritten meanwhile

            samples, rate = sm.read_wav(audio_path)
            cycle = frames + frames[::-1]
            for i, frame in enumerate(sm.talking(cycle, samples, rate, fps)):
                cv2.imwrite(f"{result_img_save_path}/{str(i).zfill(8)}.png", frame)
            rendered = [cv2.imread(path) for path in sorted(glob.glob(f"{result_img_save_path}/*.png"))]
            temp_vid_path = f"{temp_dir}/temp_{input_basename}_{audio_basename}.mp4"
            sm.encode(temp_vid_path, rendered, fps, misbehave=False)
            sm.mux(temp_vid_path, audio_path, output_vid_name)

            shutil.rmtree(result_img_save_path)
            os.remove(temp_vid_path)
            shutil.rmtree(save_dir_full)
            if not args.saved_coord:
                os.remove(crop_coord_save_path)
            print(f"Results saved to {output_vid_name}")
        except Exception as e:
            print("Error occurred during processing:", e)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ffmpeg_path", type=str, default="./ffmpeg-4.4-amd64-static/")
    parser.add_argument("--gpu_id", type=int, default=0)
    parser.add_argument("--vae_type", type=str, default="sd-vae")
    parser.add_argument("--unet_config", type=str, default="./models/musetalk/config.json")
    parser.add_argument("--unet_model_path", type=str, default="./models/musetalkV15/unet.pth")
    parser.add_argument("--whisper_dir", type=str, default="./models/whisper")
    parser.add_argument("--inference_config", type=str, default="configs/inference/test_img.yaml")
    parser.add_argument("--bbox_shift", type=int, default=0)
    parser.add_argument("--result_dir", default="./results")
    parser.add_argument("--extra_margin", type=int, default=10)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--audio_padding_length_left", type=int, default=2)
    parser.add_argument("--audio_padding_length_right", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--output_vid_name", type=str, default=None)
    parser.add_argument("--use_saved_coord", action="store_true")
    parser.add_argument("--saved_coord", action="store_true")
    parser.add_argument("--use_float16", action="store_true")
    parser.add_argument("--parsing_mode", default="jaw")
    parser.add_argument("--left_cheek_width", type=int, default=90)
    parser.add_argument("--right_cheek_width", type=int, default=90)
    parser.add_argument("--version", type=str, default="v15", choices=["v1", "v15"])
    main(parser.parse_args())

"""Video compression (DeeperForensics-1.0 "VC"): re-encode with H.264 at a CRF and decode back."""
from __future__ import annotations

import io

import av
import cv2
import numpy as np

from .base import Perturbation

FPS = 25  # nominal rate given to the encoder; AVLips-style clips are 25 fps
PRESET = "medium"  # x264's (and ffmpeg's) default preset, as a plain `ffmpeg -crf p` re-encode uses


def encode_h264(window: np.ndarray, crf: int) -> bytes:
    """An H.264 Annex-B elementary stream of an even-sized (T, H, W, 3) RGB window (libx264, yuv420p)."""
    _, h, w, _ = window.shape
    buffer = io.BytesIO()
    # A raw "h264" stream rather than mp4: the perturbation is the codec, a container adds nothing.
    with av.open(buffer, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread: x264's output is then byte-identical run to run (frame threads would change it).
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(int(crf)), "preset": PRESET}
        for i, frame in enumerate(window):
            # OpenCV's RGB->I420 (BT.601 limited range, as video is) is bit-exact across CPUs,
            # which swscale's SIMD paths do not promise.
            video_frame = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            video_frame.pts = i
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's look-ahead
            container.mux(packet)
    return buffer.getvalue()


def decode_h264(data: bytes) -> np.ndarray:
    """The (T, H, W, 3) RGB frames of an H.264 Annex-B elementary stream."""
    frames = []
    with av.open(io.BytesIO(data), mode="r", format="h264") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            frames.append(cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420))
    return np.stack(frames)


class Compression(Perturbation):
    """Re-encode the window as a short H.264 video at constant rate factor `crf` and decode it.

    The window is encoded on its own, so its first frame is an I-frame; a whole-clip re-encode
    would code most frames as P/B. Odd sizes are edge-padded to even (yuv420p) and cropped back.
    """

    name = "compression"
    parameter = "crf"
    levels = (30, 32, 35, 38, 40)
    per_frame = False

    def transform(self, window: np.ndarray, seed: int, *, crf: int) -> np.ndarray:
        """Round-trip the window through libx264 at the CRF, in memory."""
        t, h, w, _ = window.shape
        padded = np.pad(window, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        decoded = decode_h264(encode_h264(padded, crf))
        if decoded.shape != padded.shape:
            raise RuntimeError(f"compression: decoded shape {decoded.shape}, expected {padded.shape}")
        return np.ascontiguousarray(decoded[:, :h, :w])

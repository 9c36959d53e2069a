"""A video call, picture and sound together: what a WebRTC-style call delivers on five kinds of link.

The face video: each window's frames are scaled down to the size the face crop has in the call's
picture, coded with VP8 (WebRTC's mandatory video codec, RFC 7742) at a constant bitrate as WebRTC
configures libvpx, at the call's frame rate, and shown at the source's rate with each frame held
until the next one arrives; frames the encoder drops to hold its rate and frames the link loses
repeat the frame before, as a frozen picture does; the result is scaled back to the frame size.
The sound: Opus at the call's bitrate with the link's packet loss, concealed (packet_loss.py).

The level table, with where each number comes from:

    level  link            picture     fps  video kbit/s  audio kbit/s  loss
    1      good Wi-Fi      1280x720    25   2500          32            0.5%
    2      busy Wi-Fi      960x540     25   900           24            1%
    3      fair mobile     640x360     15   500           16            3%
    4      poor mobile     480x270     10   150           12            5%
    5      bad mobile      320x180     7    30            8             10%

- picture and video bitrate: libwebrtc's table of bitrates per resolution (media/engine/simulcast.cc,
  kSimulcastFormats, max/target/min kbit/s): 720p 2500/2500/600, 540p 900/900/450, 360p
  700/500/150, 270p 450/350/150, 180p 200/150/30; levels 1-3 take the target, 4-5 the minimum, where
  a congested sender sits. UPSTREAM.md section 9: poor links drop to 360p or below.
- frame rate: libwebrtc's balanced degradation defaults (rtc_base/experiments/
  balanced_degradation_settings.cc): at most 7 fps up to 320x240 pixels, 10 up to 480x270, 15 up to
  640x480; larger pictures keep the source's rate (25 here; WebRTC sends up to 30).
- audio bitrate: 32 kbit/s is WebRTC's Opus default for mono; RFC 7587 section 3.1.1 recommends
  16-20 kbit/s for wideband speech and 8-12 for narrowband, which an adapting sender drops to.
- loss: Google congestion control (draft-ietf-rmcat-gcc-02, section 6) treats loss under 2% as a
  good link, holds its rate between 2% and 10%, and cuts it above 10%; the levels step through
  that range, the last at the point where the sender starts backing off.

Assumptions of this model, not measurements: the face crop (1.8 times the face box, as compose cuts
it) spans FACE_CROP_FRACTION of the picture's height, and gets the picture's bitrate in proportion
to its area (an encoder spends somewhat more on a moving face than on a still background, so this
is on the harsh side); a lost video frame freezes the picture for its slot but its reference is
recovered (retransmission) so later frames decode cleanly; video frames are lost independently at
the link's loss rate. A window is coded after a one-second lead-in of its own frames played back
and forth, so its frames are coded as inter frames with the rate control settled, as in a running
call, not as the key frame a lone five-frame clip would start with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, ClassVar

import av
import cv2
import numpy as np

from .audio_base import as_dtype, as_signal, fit_length, resample
from .audio_codecs import OPUS_RATES
from .base import as_window, check_level, check_seed
from .errors import BadFrames
from .packet_loss import opus_through_loss


@dataclass(frozen=True)
class CallLink:
    """One level of the call channel: the link, the picture it carries and the sound."""

    link: str
    width: int  # the call picture's size
    height: int
    fps: float  # frames per second the sender codes (at most the source's rate)
    video_kbps: float  # the whole picture's video bitrate
    audio_kbps: float  # Opus bitrate
    loss_rate: float  # packets (audio) and frames (video) lost


LINKS: tuple[CallLink, ...] = (
    CallLink("good Wi-Fi", 1280, 720, 25, 2500, 32, 0.005),
    CallLink("busy Wi-Fi", 960, 540, 25, 900, 24, 0.01),
    CallLink("fair mobile", 640, 360, 15, 500, 16, 0.03),
    CallLink("poor mobile", 480, 270, 10, 150, 12, 0.05),
    CallLink("bad mobile", 320, 180, 7, 30, 8, 0.10),
)

# The face crop's share of the call picture's height (a head-and-shoulders framing; see above).
FACE_CROP_FRACTION = 0.6
LEAD_IN_S = 1.0
# libvpx as libwebrtc's VP8 encoder sets it (modules/video_coding/codecs/vp8/libvpx_vp8_encoder.cc):
# CBR, quantizer 2..56, undershoot 100%, overshoot 15%, a 1 s buffer starting half full, frame
# dropping at 30% buffer; realtime speed 8 (the encoder's speed, not its rate control), passed as -8:
# in realtime mode libvpx takes a negative cpu-used as a fixed speed, while a positive one makes it pick
# the speed per frame from measured encode times (vp8/encoder/encodeframe.c, vp8_auto_select_speed), so
# the bytes would depend on the machine's load.
VP8_QMIN, VP8_QMAX = 2, 56
VP8_BUFFER_S, VP8_INITIAL_BUFFER_S = 1.0, 0.5
VP8_DROP_THRESHOLD = 30
VP8_CPU_USED = 8
_VIDEO_STREAM = 0xCA11
_PHASE_STREAM = 0xF8A3E


def even(value: float) -> int:
    """The nearest even int of at least 2 (4:2:0 video needs even sides)."""
    return max(2, int(round(value / 2.0)) * 2)


def call_size(height: int, width: int, link: CallLink) -> tuple[int, int]:
    """(h, w) of a frame in the call: its height FACE_CROP_FRACTION of the picture's, never enlarged."""
    scale = min(1.0, FACE_CROP_FRACTION * link.height / height)
    return even(height * scale), even(width * scale)


def crop_kbps(size: tuple[int, int], link: CallLink) -> float:
    """The crop's share of the picture's video bitrate, in proportion to its area."""
    return link.video_kbps * size[0] * size[1] / (link.width * link.height)


def capture_positions(first: float, last: float, interval: float, phase: float) -> list[int]:
    """Source frame indices a sender sampling every `interval` source frames takes in [first, last).

    Capture instants fall at (phase + k) * interval for integer k; each takes the newest source
    frame, floor(instant). At least the source's rate: every frame.
    """
    if interval <= 1.0:
        return list(range(int(np.floor(first)), int(np.ceil(last))))
    start = int(np.ceil(first / interval - phase))
    taken = []
    k = start
    while (phase + k) * interval < last:
        taken.append(int(np.floor((phase + k) * interval)))
        k += 1
    return sorted(set(taken))


def lead_in_frame(index: int, count: int) -> int:
    """The window frame shown at source index `index` < 0 of the lead-in: the window played back and forth."""
    if count == 1:
        return 0
    period = 2 * (count - 1)
    at = (-index) % period
    return at if at <= count - 1 else period - at


@dataclass
class CodedVideo:
    """The VP8 stream of one window: packet sizes by source index, and the decoded pictures."""

    size: tuple[int, int]
    kbps_target: float
    sizes: dict[int, int]  # source index -> packet bytes (frames the encoder coded)
    decoded: dict[int, np.ndarray]  # source index -> decoded RGB picture
    seconds: float  # the coded span (lead-in and window) in seconds

    def bitrate_kbps(self) -> float:
        """The stream's bitrate over the coded span."""
        return sum(self.sizes.values()) * 8 / self.seconds / 1000.0


def encode_vp8(pictures: list[tuple[int, np.ndarray]], source_fps: float, kbps: float) -> CodedVideo:
    """Code (source index, RGB picture) pairs in order with libvpx VP8 at a constant `kbps`, and decode them."""
    h, w = pictures[0][1].shape[:2]
    bit_rate = max(1000, int(round(kbps * 1000)))
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuv420p"
    rate = Fraction(source_fps).limit_denominator(1001)
    encoder.time_base = 1 / rate
    encoder.framerate = rate
    encoder.bit_rate = bit_rate
    encoder.thread_count = 1  # one thread: the same bytes run to run
    encoder.options = {
        "deadline": "realtime", "cpu-used": str(-VP8_CPU_USED), "lag-in-frames": "0",
        "minrate": str(bit_rate), "maxrate": str(bit_rate),  # equal to the rate: CBR in FFmpeg's wrapper
        "bufsize": str(int(bit_rate * VP8_BUFFER_S)), "rc_init_occupancy": str(int(bit_rate * VP8_INITIAL_BUFFER_S)),
        "qmin": str(VP8_QMIN), "qmax": str(VP8_QMAX), "undershoot-pct": "100", "overshoot-pct": "15",
        "drop-threshold": str(VP8_DROP_THRESHOLD),
    }
    decoder = av.CodecContext.create("vp8", "r")
    decoder.thread_count = 1
    offset = -pictures[0][0]  # pts start at 0
    sizes: dict[int, int] = {}
    decoded: dict[int, np.ndarray] = {}

    def take(packets) -> None:
        for packet in packets:
            index = int(packet.pts) - offset
            sizes[index] = packet.size
            for frame in decoder.decode(packet):
                decoded[index] = cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)

    for index, picture in pictures:
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(picture, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        frame.pts = index + offset
        take(encoder.encode(frame))
    take(encoder.encode(None))
    span = (pictures[-1][0] - pictures[0][0] + 1) / source_fps
    return CodedVideo((h, w), kbps, sizes, decoded, span)


@dataclass
class CallVideo:
    """What the call did to a window's frames: the frames shown, and the schedule behind them."""

    frames: np.ndarray
    shown: list[int]  # per window frame: the source index of the picture shown
    sent: list[int]  # window frames the sender captured
    coded: list[int]  # of those, the ones the encoder did not drop
    lost: list[int]  # of those, the ones the link lost
    video: CodedVideo


class Call:
    """The call channel: `video_kbps` names the level; every link field is a parameter (CallLink)."""

    name: ClassVar[str] = "call"
    parameter: ClassVar[str] = "video_kbps"
    levels: ClassVar[tuple[float, ...]] = tuple(link.video_kbps for link in LINKS)
    seeded: ClassVar[bool] = True
    # 2: VP8 at a fixed speed (the same bytes under any load); 3: Opus encoder complexity 2, was 5
    version: ClassVar[int] = 3

    def value(self, level: int, sample: str | None = None) -> float:
        """The picture's video bitrate at a level."""
        return self.levels[check_level(level, self.name, sample) - 1]

    def link(self, level: int, sample: str | None = None) -> CallLink:
        """The link at a level."""
        return LINKS[check_level(level, self.name, sample) - 1]

    def params(self, level: int, sample: str | None = None) -> dict[str, Any]:
        """Every field of the level's link."""
        return asdict(self.link(level, sample))

    def apply(self, frames: np.ndarray, fps: float, samples: np.ndarray, sample_rate: int, level: int, seed: int,
              *, sample: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The window's frames and audio as the call delivers them; same shapes, dtypes and rates."""
        link = self.link(level, sample)
        seed = check_seed(seed, self.name, sample)
        audio = self.audio(samples, sample_rate, link, seed, sample=sample)
        return self.video(frames, fps, link, seed, sample=sample).frames, audio

    def audio(self, samples: np.ndarray, sample_rate: int, link: CallLink, seed: int, *,
              sample: str | None = None) -> np.ndarray:
        """Opus at the link's bitrate through its packet loss, concealed; same length and dtype."""
        signal, rate = as_signal(samples, sample_rate, self.name, sample)
        coded_rate = rate if rate in OPUS_RATES else 48000
        out, _ = opus_through_loss(resample(signal, rate, coded_rate), coded_rate, link.audio_kbps,
                                   link.loss_rate, seed)
        return as_dtype(fit_length(resample(out, coded_rate, rate), len(signal)), samples.dtype)

    def video(self, frames: np.ndarray, fps: float, link: CallLink, seed: int, *,
              sample: str | None = None) -> CallVideo:
        """The window's frames through the call's video path (see the module's description)."""
        window, single = as_window(frames, self.name, sample)
        if single:
            raise BadFrames(f"{self.name}: a call needs a window of frames (T, H, W, 3), got one frame", sample)
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not fps > 0:
            raise BadFrames(f"{self.name}: fps must be a positive number, got {fps!r}", sample)
        count, height, width, _ = window.shape
        size = call_size(height, width, link)
        small = [cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA) for frame in window]
        interval = max(1.0, float(fps) / link.fps)
        phase = float(np.random.default_rng([seed, _PHASE_STREAM]).random())
        lead_in = int(round(LEAD_IN_S * fps))
        indices = capture_positions(-lead_in, count, interval, phase)
        sent = [i for i in indices if i >= 0]
        if 0 not in sent:  # the window's first frame is on screen: the sender took it (or one before it)
            sent = [0] + sent
            indices = sorted(set(indices) | {0})
        pictures = [(i, small[i] if i >= 0 else small[lead_in_frame(i, count)]) for i in indices]
        video = encode_vp8(pictures, float(fps), crop_kbps(size, link))
        coded = [i for i in sent if i in video.decoded]
        draws = np.random.default_rng([seed, _VIDEO_STREAM]).random(count) < link.loss_rate
        lost = [i for i in coded if i > 0 and draws[i]]
        # Before the window's first arrival, the last picture of the lead-in is on screen.
        arrived = sorted(set(coded) - set(lost)) or []
        earlier = [i for i in video.decoded if i < 0]
        shown, current = [], (max(earlier) if earlier else None)
        for i in range(count):
            if i in arrived:
                current = i
            shown.append(current if current is not None else min(video.decoded))
        out = np.stack([cv2.resize(video.decoded[i], (width, height), interpolation=cv2.INTER_LINEAR)
                        for i in shown])
        return CallVideo(out, shown, sent, coded, lost, video)

"""Speech codecs in memory through PyAV: a mono signal to packets and back, with the codec delay removed.

PyAV's bundled FFmpeg has libopus, libmp3lame and libopencore_amrnb (with FFmpeg's own AMR-NB and
MP3 decoders), so a round trip costs a few milliseconds and no process start. Each codec's delay,
the samples its decoded output runs behind its input, is a property of the codec, not of the
bitrate or of the signal; it is removed here so that the decoded signal lines up with the input
sample for sample (tests/perturbations/test_audio_formulas.py measures it by cross-correlation):

- Opus: the encoder's look-ahead, written as the pre-skip of the OpusHead header (RFC 7845; 312
  samples at 48 kHz, 6.5 ms); FFmpeg's libopus decoder reads it from the header and drops it.
- MP3: 1105 samples, LAME's 576-sample encoder delay plus the decoder's 529 (the initial padding
  FFmpeg's libmp3lame wrapper declares, which a raw decoder does not skip).
- AMR-NB: 40 samples at 8 kHz (5 ms), the encoder's look-ahead (3GPP TS 26.090), measured the same
  for every mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import av
import numpy as np

from .audio_base import INT16_SCALE, resample

OPUS_FRAME_MS = 20  # WebRTC's default packet time (libwebrtc AudioEncoderOpusConfig kDefaultFrameSizeMs)
# Encoder effort (0..10): 2, below libwebrtc's phone default of 5 (9 on desktop), for the stage's budget of
# 20 ms per window (1.4 s of audio) on one core: PyAV's libopus is a fixed-point build whose encoder alone
# takes about 18.5 ms per window at 5 and 14.7 at 2 (CPU time, pinned core). 2 is the lowest effort that
# keeps every packet's mode and band as at 5: at 0-1 libopus rates its cheaper quantiser 20% less efficient
# and codes 12 kbit/s narrowband (opus_encoder.c compute_equiv_rate). Bitrate, packet sizes and modes, and
# the decoder are as they were; the damage is a little stronger (cheaper quantising): mean |mel dB - clean|
# on synthetic speech 2.4, 3.3, 13.1 dB at 32, 16, 8 kbit/s, against 2.2, 2.9, 13.0 at 5.
OPUS_COMPLEXITY = 2
OPUS_DECODE_RATE = 48000  # FFmpeg's libopus decoder always decodes at 48 kHz
MP3_DELAY = 576 + 529  # LAME's encoder delay + the MP3 decoder's delay, in samples at the coded rate
AMR_NB_DELAY = 40  # samples at 8 kHz
AMR_NB_HEADER_BYTES = 1  # each AMR packet starts with a one-byte frame header (RFC 4867 storage format)


@dataclass
class Encoded:
    """What an encoder produced: its packets, the samples each covers, and what the decoder needs."""

    packets: list[bytes]
    sample_rate: int  # the coded rate
    frame_samples: int  # samples per packet at the coded rate
    input_samples: int  # samples given to the encoder
    extradata: bytes | None = None
    # Per packet: True when it reached the decoder (all of them, unless a channel dropped some).
    delivered: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.delivered:
            self.delivered = [True] * len(self.packets)

    def payload_bytes(self, header_bytes: int = 0) -> int:
        """Bytes the codec spent on the signal, without `header_bytes` of framing per packet."""
        return sum(len(p) - header_bytes for p in self.packets)

    def bitrate_kbps(self, header_bytes: int = 0) -> float:
        """The stream's bitrate over the packets' duration (kbit/s)."""
        seconds = len(self.packets) * self.frame_samples / self.sample_rate
        return self.payload_bytes(header_bytes) * 8 / seconds / 1000.0


def _pcm_frame(signal: np.ndarray, sample_rate: int, pcm_format: str) -> av.AudioFrame:
    """One PyAV frame of int16 PCM holding the whole signal (PyAV cuts it into codec frames)."""
    pcm = np.clip(np.round(signal * INT16_SCALE), -32768, 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format=pcm_format, layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    return frame


def encode(codec: str, signal: np.ndarray, sample_rate: int, bit_rate: int, pcm_format: str = "s16",
           options: dict[str, str] | None = None) -> Encoded:
    """Encode a float32 mono signal with an FFmpeg encoder at a bitrate (bit/s); flushed to the end."""
    context = av.CodecContext.create(codec, "w")
    context.sample_rate = sample_rate
    context.layout = "mono"
    context.format = pcm_format
    context.bit_rate = int(bit_rate)
    context.time_base = Fraction(1, sample_rate)
    context.options = dict(options or {})
    context.open()
    packets = [bytes(p) for p in context.encode(_pcm_frame(signal, sample_rate, pcm_format))]
    packets += [bytes(p) for p in context.encode(None)]
    extradata = bytes(context.extradata) if context.extradata else None
    return Encoded(packets, sample_rate, int(context.frame_size), len(signal), extradata)


def decode(codec: str, packets: Sequence[bytes], extradata: bytes | None = None,
           sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode packets with an FFmpeg decoder: the float32 mono signal and its rate.

    `sample_rate` is for decoders of raw packets that carry no header saying it (AMR-NB).
    """
    context = av.CodecContext.create(codec, "r")
    if extradata:
        context.extradata = extradata
    if sample_rate:
        context.sample_rate = sample_rate
        context.layout = "mono"
    chunks, rate = [], 0
    for packet in packets:
        for frame in context.decode(av.Packet(packet)):
            rate = frame.sample_rate
            chunks.append(_mono_samples(frame))
    for frame in context.decode(None):
        rate = frame.sample_rate
        chunks.append(_mono_samples(frame))
    if not chunks:
        raise RuntimeError(f"{codec}: {len(packets)} packets decoded to no samples")
    return _as_float(np.concatenate(chunks)), rate


# Sample formats a mono frame holds in its one plane, and their numpy types.
_PLANE_DTYPES = {"s16": np.int16, "s16p": np.int16, "flt": np.float32, "fltp": np.float32}


def _mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """A decoded mono frame's samples, read from its plane (no copy).

    Read directly, not with `to_ndarray`, which stacks the planes with a numpy call per frame
    (0.2 ms of a window's Opus decode); a plane is padded past its samples, hence `count`.
    """
    dtype = _PLANE_DTYPES.get(frame.format.name)
    if dtype is None or len(frame.planes) != 1:
        return frame.to_ndarray().reshape(-1)
    return np.frombuffer(frame.planes[0], dtype=dtype, count=frame.samples)


def _as_float(samples: np.ndarray) -> np.ndarray:
    """Decoded samples as float32 in [-1, 1]."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(INT16_SCALE)
    return samples.astype(np.float32, copy=False)


# --- Opus --------------------------------------------------------------------------------------

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def opus_encode(signal: np.ndarray, sample_rate: int, bitrate_kbps: float) -> Encoded:
    """Opus at a constant bitrate in 20 ms packets, tuned for speech as WebRTC runs it (VoIP), at OPUS_COMPLEXITY.

    Constant bitrate (not WebRTC's default VBR, which averages to the same rate on speech) so that
    every packet costs the level's bitrate and the rate can be checked packet by packet.
    """
    options = {"vbr": "off", "application": "voip", "frame_duration": str(OPUS_FRAME_MS),
               "compression_level": str(OPUS_COMPLEXITY)}
    return encode("libopus", signal, sample_rate, int(round(bitrate_kbps * 1000)), "s16", options)


def concealment_packet(packet: bytes) -> bytes:
    """The packet a receiver hands libopus for a lost one: the TOC byte alone, one frame (code 0).

    libopus conceals a frame whose payload is empty (opus_decode_frame treats 0 or 1 payload bytes
    as lost: packet-loss concealment for as long as the TOC's frame size says), which FFmpeg's
    libopus decoder passes through; a missing packet would just be a gap in the output.
    """
    return bytes([packet[0] & 0xFC])


def opus_decode(encoded: Encoded, sample_rate: int) -> np.ndarray:
    """The decoded signal at `sample_rate`, aligned with the input; lost packets concealed by libopus."""
    packets = [p if ok else concealment_packet(p) for p, ok in zip(encoded.packets, encoded.delivered)]
    decoded, rate = decode("libopus", packets, encoded.extradata)
    if rate != OPUS_DECODE_RATE:
        raise RuntimeError(f"libopus decoded at {rate} Hz, expected {OPUS_DECODE_RATE}")
    return resample(decoded, rate, sample_rate)


# --- MP3 ---------------------------------------------------------------------------------------

def mp3_encode(signal: np.ndarray, sample_rate: int, bitrate_kbps: float) -> Encoded:
    """MP3 (LAME) at a constant bitrate."""
    return encode("libmp3lame", signal, sample_rate, int(round(bitrate_kbps * 1000)), "s16p")


def mp3_decode(encoded: Encoded) -> np.ndarray:
    """The decoded signal, its first MP3_DELAY samples dropped."""
    decoded, _ = decode("mp3float", encoded.packets)
    return decoded[MP3_DELAY:]


# --- AMR-NB ------------------------------------------------------------------------------------

AMR_NB_RATE = 8000
# The eight AMR-NB modes in bit/s (3GPP TS 26.071), mode 0 (4.75 kbit/s) to mode 7 (12.2, GSM-EFR).
AMR_NB_MODES = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)


def amr_nb_encode(signal: np.ndarray, bitrate_kbps: float) -> Encoded:
    """AMR-NB at 8 kHz in the mode of `bitrate_kbps`, 20 ms packets, no DTX (every frame coded)."""
    bit_rate = int(round(bitrate_kbps * 1000))
    if bit_rate not in AMR_NB_MODES:
        raise ValueError(f"AMR-NB has no {bitrate_kbps} kbit/s mode; its modes: {[m / 1000 for m in AMR_NB_MODES]}")
    return encode("libopencore_amrnb", signal, AMR_NB_RATE, bit_rate, "s16", {"dtx": "0"})


def amr_nb_mode(packet: bytes) -> int:
    """The mode (0..7) a packet's frame header names (RFC 4867 section 5.3: bits 3..6)."""
    return (packet[0] >> 3) & 0x0F


def amr_nb_decode(encoded: Encoded) -> np.ndarray:
    """The decoded 8 kHz signal, its first AMR_NB_DELAY samples dropped."""
    decoded, _ = decode("amrnb", encoded.packets, sample_rate=AMR_NB_RATE)
    return decoded[AMR_NB_DELAY:]

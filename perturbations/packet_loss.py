"""Lost packets: Opus speech in 20 ms packets, some never arriving, concealed by the Opus decoder.

Every audio packet of a call is lost or not independently with the level's probability (a
Bernoulli channel; real links also lose in bursts, which this does not model). A lost packet is
concealed by libopus's own packet-loss concealment (PLC), as a WebRTC receiver does: the decoder
extrapolates the last pitch and spectrum for the missing 20 ms and fades out over longer gaps. Opus
is the codec here because it is the one calls use that has a concealment; with no concealment a
lost packet would be 20 ms of silence, which no receiver plays, so silence is not used. No forward
error correction (Opus in-band FEC) either: the result is what a receiver plays when FEC is off or
cannot recover the packet.
"""
from __future__ import annotations

import numpy as np

from .audio_base import AudioPerturbation, fit_length
from .audio_codecs import OPUS_RATES, Encoded, opus_decode, opus_encode

# The Opus bitrate under the losses: WebRTC's default for mono speech, the opus type's level 1,
# so that the levels differ by the losses alone.
LOSS_BITRATE_KBPS = 32
# Mixed into the seed so the loss draws are independent of any other draw from the same key seed.
_LOSS_STREAM = 0x105E5


def lost_packets(count: int, loss_rate: float, seed: int) -> np.ndarray:
    """Which of `count` packets are lost: independent draws, True with probability `loss_rate`."""
    return np.random.default_rng([seed, _LOSS_STREAM]).random(count) < loss_rate


def drop_packets(encoded: Encoded, loss_rate: float, seed: int) -> Encoded:
    """The stream as the receiver gets it: the same packets, `delivered` False for the lost ones."""
    lost = lost_packets(len(encoded.packets), loss_rate, seed)
    return Encoded(encoded.packets, encoded.sample_rate, encoded.frame_samples, encoded.input_samples,
                   encoded.extradata, [not x for x in lost])


def opus_through_loss(signal: np.ndarray, sample_rate: int, bitrate_kbps: float, loss_rate: float,
                      seed: int) -> tuple[np.ndarray, Encoded]:
    """Opus at a bitrate over a channel losing packets; the decoded signal (as long as the input) and the stream."""
    received = drop_packets(opus_encode(signal, sample_rate, bitrate_kbps), loss_rate, seed)
    return fit_length(opus_decode(received, sample_rate), len(signal)), received


class PacketLoss(AudioPerturbation):
    """Opus at 32 kbit/s with each 20 ms packet lost with probability `loss_rate`, concealed by libopus."""

    name = "packet_loss"
    parameter = "loss_rate"
    levels = (0.01, 0.03, 0.05, 0.10, 0.20)
    seeded = True
    version = 2  # 2: Opus encoder complexity 2, was 5 (audio_codecs.OPUS_COMPLEXITY)
    codec_rates = OPUS_RATES
    resample_to = 48000

    def transform(self, signal: np.ndarray, sample_rate: int, seed: int, *, sample: str | None = None,
                  loss_rate: float) -> np.ndarray:
        """Encode, lose packets (drawn from the seed), decode with concealment."""
        return opus_through_loss(signal, sample_rate, LOSS_BITRATE_KBPS, loss_rate, seed)[0]

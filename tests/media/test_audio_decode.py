"""media.audio_decode: samples in sync with the first frame, resampled as librosa.load does."""
from __future__ import annotations

import numpy as np
import pytest

from avlips.media.audio_decode import iter_audio, read_audio, resampled_length
from avlips.media.encode import write_video, write_wav
from avlips.media.errors import NoAudio, TruncatedMedia
from avlips.media.probe import probe, probe_audio
from tests.builders import gradient_frames, run_ffmpeg, tone


def test_read_audio_resamples_to_mono(tmp_path):
    stereo = tone(1.0, 44100, freq=1000.0, channels=2)
    write_wav(tmp_path / "a.wav", stereo, 44100)
    audio = read_audio(tmp_path / "a.wav", 16000)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert len(audio) == pytest.approx(16000, abs=2)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(1000.0, abs=2.0)
    both = read_audio(tmp_path / "a.wav", 16000, mono=False)
    assert both.shape[0] == 2


@pytest.mark.parametrize("rate, channels, container", [(44100, 2, "wav"), (16000, 1, "wav"), (22050, 1, "wav"),
                                                     (48000, 2, "mp4")])
def test_iter_audio_blocks_join_into_read_audio(tmp_path, make_video, rate, channels, container):
    """Streaming decode, mix and resample give read_audio's samples exactly, whatever the block size."""
    rng = np.random.default_rng(rate + channels)
    noise = (0.2 * rng.standard_normal((channels, int(3.3 * rate)))).astype(np.float32)
    signal = tone(3.3, rate, freq=523.0, channels=channels) + (noise[0] if channels == 1 else noise)
    if container == "wav":
        path = tmp_path / "a.wav"
        write_wav(path, signal, rate)
    else:  # AAC in mp4: decoded frames of 1024 samples, a resampler fed from many chunks
        path = tmp_path / "a.mp4"
        write_video(path, gradient_frames(80, 32, 32), 25, signal, rate)
    whole = read_audio(path, 22050)
    for block in (1000, 1 << 16, 10**7):
        blocks = list(iter_audio(path, 22050, block_samples=block))
        assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
        assert np.array_equal(np.concatenate(blocks), whole), block


def test_iter_audio_errors_like_read_audio(make_video):
    with pytest.raises(NoAudio):
        list(iter_audio(make_video(n=10, audio=False)))


def test_no_audio_track(make_video):
    path = make_video(n=10, audio=False)
    assert not probe(path).has_audio
    with pytest.raises(NoAudio):
        read_audio(path)


def test_audio_track_starting_after_the_first_frame_keeps_its_sync(tmp_path):
    """A track that starts 0.5 s in is heard 0.5 s in: sample 0 of the audio is shown with frame 0."""
    rate = 16000
    beep = np.zeros(2 * rate, np.float32)
    beep[rate:rate + 800] = tone(0.05, rate, freq=1000.0)  # 50 ms at 1.0 s
    source, late = tmp_path / "beep.mp4", tmp_path / "late.mp4"
    write_video(source, gradient_frames(50, 48, 64), 25.0, beep, rate)
    run_ffmpeg("-i", str(source), "-itsoffset", "0.5", "-i", str(source), "-map", "0:v", "-map", "1:a",
            "-c", "copy", str(late))

    def onset(audio: np.ndarray) -> float:
        return float(np.flatnonzero(np.abs(audio) > 0.1)[0]) / rate

    assert onset(read_audio(source, rate)) == pytest.approx(1.0, abs=0.005)
    shifted = read_audio(late, rate)
    assert onset(shifted) == pytest.approx(1.5, abs=0.005)
    assert np.array_equal(np.concatenate(list(iter_audio(late, rate, block_samples=3000))), shifted)


def test_audio_track_starting_past_the_video_is_no_audio(make_video, tmp_path):
    source = make_video(n=10, audio=True)
    late = tmp_path / "late.mp4"
    run_ffmpeg("-i", str(source), "-itsoffset", "5", "-i", str(source), "-map", "0:v", "-map", "1:a",
            "-c", "copy", str(late))
    with pytest.raises(NoAudio, match="after the video's end"):
        read_audio(late)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_codec_padding_is_not_audio(make_video, rate):
    """AAC pads its last frame to 1024 samples; the file's duration (what players play) is the audio."""
    path = make_video(n=50, fps=25.0, rate=rate)  # 2.0 s of tone
    assert len(read_audio(path, rate)) == 2 * rate
    assert probe_audio(path).duration == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("samples", [16000, 16001, 16003, 33337])
def test_resampled_audio_is_librosa_load_to_the_sample(tmp_path, samples):
    # The reference loads its wavs with librosa.load: same length rule (ceil), same soxr HQ values.
    import librosa

    wav = tmp_path / "a.wav"
    rng = np.random.default_rng(samples)
    write_wav(wav, (0.3 * rng.standard_normal(samples)).astype(np.float32), 16000)
    reference, _ = librosa.load(str(wav))
    ours = read_audio(wav, 22050)
    streamed = np.concatenate(list(iter_audio(wav, 22050, block_samples=4096)))
    assert len(ours) == len(reference) == resampled_length(samples, 16000, 22050)
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(streamed, ours)


def test_audio_damaged_mid_file_is_an_error_not_a_silent_cut(make_video, tmp_path):
    # Random bytes over a stretch of the file's middle: decoding stops there. Keeping only the part
    # before it would quietly give a clip whose sound ends early.
    clean = make_video("long.mp4", n=150, size=(32, 32), rate=16000)  # 6 s
    data = bytearray(clean.read_bytes())
    rng = np.random.default_rng(3)
    for start in (len(data) * 3 // 10, len(data) // 2):
        data[start:start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    assert len(read_audio(clean)) == 6 * 16000
    with pytest.raises(TruncatedMedia, match=r"damaged\.mp4.*audio decoding stopped at [0-9.]+s of 6\.00s"):
        read_audio(damaged)


@pytest.mark.parametrize("rate, channels, container", [(16000, 1, "wav"), (44100, 2, "wav"), (48000, 1, "mp4")])
def test_one_pass_gives_both_rates(tmp_path, make_video, rate, channels, container):
    """iter_audio's side rate, from the same decoding pass, equals a pass of its own."""
    rng = np.random.default_rng(rate)
    signal = (0.2 * rng.standard_normal((channels, int(2.7 * rate)))).astype(np.float32)
    if container == "wav":
        path = tmp_path / "a.wav"
        write_wav(path, signal if channels > 1 else signal[0], rate)
    else:
        path = tmp_path / "a.mp4"
        write_video(path, gradient_frames(60, 32, 32), 25, signal[0], rate)
    side: list[np.ndarray] = []
    main = list(iter_audio(path, 22050, block_samples=5000, side=(16000, side.append)))
    assert np.array_equal(np.concatenate(main), read_audio(path, 22050))
    assert np.array_equal(np.concatenate(side), read_audio(path, 16000))


def test_pcm_wav_opened_without_read_ahead_decodes_the_same(tmp_path):
    """The quick open of a PCM wav gives the samples and stream facts of FFmpeg's default open."""
    import av

    from avlips.media.audio_decode import _open_audio

    path = tmp_path / "a.wav"
    write_wav(path, tone(1.3, 16000, freq=440.0), 16000)
    with _open_audio(str(path)) as quick, av.open(str(path)) as default:
        assert quick.format.name == "wav"
        a, b = quick.streams.audio[0], default.streams.audio[0]
        assert (a.rate, a.duration, a.codec_context.name) == (b.rate, b.duration, b.codec_context.name)
        samples = [np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1) for c in (quick, default)]
    assert np.array_equal(samples[0], samples[1])

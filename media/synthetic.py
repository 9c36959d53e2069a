"""Synthetic talking heads: speech-like audio and a drawn face whose mouth follows it.

The demo corpus and the tests are built from these, so nothing needs a download. The faces are
cartoons, not people: they exist to exercise the stages, with lip-audio sync that holds in the
real clips (the mouth opening is the audio's loudness envelope at each frame's time).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Persona:
    """The look and voice of one synthetic identity."""

    name: str
    skin: tuple[int, int, int]  # RGB
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    pitch_hz: float  # mean fundamental frequency of the voice
    syllable_rate_hz: float
    face_width: float  # fraction of the frame width
    mouth_width: float  # fraction of the face width


def make_persona(name: str, seed: int) -> Persona:
    """A persona drawn at random from a seed; the same seed gives the same persona."""
    rng = np.random.default_rng(seed)
    skin_tone = rng.uniform(0.35, 0.95)
    skin = tuple(int(v) for v in np.array([235, 190, 160]) * skin_tone + rng.integers(-10, 10, 3))
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    background = tuple(int(v) for v in rng.integers(40, 220, 3))
    return Persona(
        name=name,
        skin=tuple(int(np.clip(v, 0, 255)) for v in skin),
        hair=hair,
        background=background,
        pitch_hz=float(rng.uniform(95, 240)),
        syllable_rate_hz=float(rng.uniform(3.5, 5.5)),
        face_width=float(rng.uniform(0.52, 0.62)),
        mouth_width=float(rng.uniform(0.42, 0.5)),
    )


def speech_like_audio(persona: Persona, duration: float, sample_rate: int, seed: int,
                      noise_level: float = 0.01) -> np.ndarray:
    """Voiced syllables with pauses: a harmonic source through three formants, gated by an envelope."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    envelope = syllable_envelope(persona.syllable_rate_hz, duration, sample_rate, rng)
    # Pitch wanders slowly around the persona's mean, like intonation.
    drift = np.cumsum(rng.normal(0, 1, n)) / np.sqrt(sample_rate) * 8.0
    f0 = persona.pitch_hz * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))) + drift
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    source = sum(np.sin(k * phase) / k for k in range(1, 16))
    voiced = _formant_filter(source, sample_rate, rng)
    voiced /= np.max(np.abs(voiced)) + 1e-9
    audio = 0.6 * voiced * envelope + noise_level * rng.standard_normal(n)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def syllable_envelope(rate_hz: float, duration: float, sample_rate: int,
                      rng: np.random.Generator) -> np.ndarray:
    """A 0..1 loudness envelope: syllables with short ramps and clear gaps, and a few pauses.

    Syllables are flat-topped (ramps of ~20 ms) and separated by silent gaps, so that a 0.2 s LipFD
    window usually holds an onset or an offset: the mouth's opening and closing is then visible in
    five frames, and so is a mismatch with someone else's speech.
    """
    n = int(round(duration * sample_rate))
    envelope = np.zeros(n, dtype=np.float64)
    ramp = max(1, int(0.02 * sample_rate))
    position = rng.uniform(0.05, 0.2)
    while position < duration:
        if rng.random() < 0.08:  # a pause between phrases
            position += rng.uniform(0.25, 0.5)
            continue
        length = rng.uniform(0.45, 0.8) / rate_hz
        start, stop = int(position * sample_rate), min(n, int((position + length) * sample_rate))
        if stop > start:
            shape = np.ones(stop - start)
            edge = min(ramp, (stop - start) // 2)
            if edge:
                rise = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
                shape[:edge] = rise
                shape[len(shape) - edge:] = rise[::-1]
            envelope[start:stop] = np.maximum(envelope[start:stop], rng.uniform(0.7, 1.0) * shape)
        position += length + rng.uniform(0.4, 0.8) / rate_hz  # the gap before the next syllable
    return envelope


def _formant_filter(source: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import lfilter

    out = np.zeros_like(source)
    for centre, bandwidth in ((rng.uniform(500, 800), 90), (rng.uniform(1100, 1800), 110),
                              (rng.uniform(2300, 2900), 160)):
        r = np.exp(-np.pi * bandwidth / sample_rate)
        theta = 2 * np.pi * centre / sample_rate
        out += lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source)
    return out


def envelope_at_frames(audio: np.ndarray, sample_rate: int, frame_times: np.ndarray,
                       window: float = 0.04) -> np.ndarray:
    """Loudness (RMS over `window` seconds centred on each time), scaled to 0..1 by the clip's peak."""
    half = int(window * sample_rate / 2)
    centres = np.clip((np.asarray(frame_times) * sample_rate).astype(int), 0, len(audio) - 1)
    power = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    lo, hi = np.clip(centres - half, 0, len(audio)), np.clip(centres + half, 1, len(audio))
    rms = np.sqrt((power[hi] - power[lo]) / np.maximum(hi - lo, 1))
    return rms / (rms.max() + 1e-9)


def render_face(persona: Persona, size: int, mouth_open: float, head_shift: tuple[float, float] = (0, 0),
                blink: bool = False) -> np.ndarray:
    """One RGB frame of the persona with the mouth opened by `mouth_open` (0..1)."""
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = persona.background
    cx = size / 2 + head_shift[0] * size
    cy = size / 2 + head_shift[1] * size
    face_w = persona.face_width * size
    face_h = face_w * 1.3
    # Sub-pixel drawing keeps slow head motion smooth instead of jumping whole pixels.
    shift = 4
    scale = 1 << shift

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(x * scale)), int(round(y * scale))

    def axes(a: float, b: float) -> tuple[int, int]:
        return int(round(a * scale)), int(round(b * scale))

    cv2.ellipse(frame, pt(cx, cy - face_h * 0.18), axes(face_w * 0.56, face_h * 0.52), 0, 180, 360,
                persona.hair, -1, cv2.LINE_AA, shift)
    cv2.ellipse(frame, pt(cx, cy), axes(face_w / 2, face_h / 2), 0, 0, 360, persona.skin, -1,
                cv2.LINE_AA, shift)
    eye_y = cy - face_h * 0.12
    brow = tuple(int(v * 0.3) for v in persona.hair)
    for side in (-1, 1):
        ex = cx + side * face_w * 0.2
        # Dark brows over the eyes: the contrast pattern a Haar face cascade keys on, so the
        # face-tracking generators (mouth_rewrite) find these cartoons as they find people.
        cv2.ellipse(frame, pt(ex, eye_y - face_h * 0.07), axes(face_w * 0.1, face_h * 0.02), 0, 180, 360,
                    brow, max(1, round(size / 40)), cv2.LINE_AA, shift)
        if blink:
            cv2.line(frame, pt(ex - face_w * 0.07, eye_y), pt(ex + face_w * 0.07, eye_y), (40, 30, 30),
                     max(1, size // 120), cv2.LINE_AA, shift)
        else:
            cv2.ellipse(frame, pt(ex, eye_y), axes(face_w * 0.08, face_h * 0.035), 0, 0, 360,
                        (250, 250, 250), -1, cv2.LINE_AA, shift)
            cv2.circle(frame, pt(ex, eye_y), int(face_w * 0.03 * scale), (40, 30, 30), -1, cv2.LINE_AA, shift)
    nose = np.array([pt(cx, cy - face_h * 0.02), pt(cx - face_w * 0.05, cy + face_h * 0.1),
                     pt(cx + face_w * 0.05, cy + face_h * 0.1)], dtype=np.int32)
    darker = tuple(int(v * 0.8) for v in persona.skin)
    cv2.fillConvexPoly(frame, nose, darker, cv2.LINE_AA, shift)
    mouth_y = cy + face_h * 0.25
    mouth_w = face_w * persona.mouth_width / 2
    opening = face_h * (0.01 + 0.15 * float(np.clip(mouth_open, 0, 1)))
    lips = tuple(int(v) for v in (np.array(persona.skin) * np.array([0.75, 0.45, 0.45])))
    cv2.ellipse(frame, pt(cx, mouth_y), axes(mouth_w + face_w * 0.02, opening + face_h * 0.025), 0, 0, 360,
                lips, -1, cv2.LINE_AA, shift)
    cv2.ellipse(frame, pt(cx, mouth_y), axes(mouth_w, opening), 0, 0, 360, (35, 10, 15), -1,
                cv2.LINE_AA, shift)
    if mouth_open > 0.25:  # teeth show when the mouth is open (a thin row: the open mouth stays dark)
        cv2.ellipse(frame, pt(cx, mouth_y - opening * 0.75), axes(mouth_w * 0.6, opening * 0.15), 0, 0, 360,
                    (235, 235, 230), -1, cv2.LINE_AA, shift)
    return frame


def render_talking_clip(persona: Persona, audio: np.ndarray, sample_rate: int, fps: float, size: int,
                        seed: int) -> np.ndarray:
    """Frames (T, size, size, 3) of the persona speaking `audio`: mouth opening = loudness envelope."""
    rng = np.random.default_rng(seed)
    n_frames = int(np.floor(len(audio) / sample_rate * fps))
    times = (np.arange(n_frames) + 0.5) / fps
    opening = envelope_at_frames(audio, sample_rate, times)
    sway_x = 0.015 * np.sin(2 * np.pi * times * rng.uniform(0.15, 0.35) + rng.uniform(0, 6))
    sway_y = 0.01 * np.sin(2 * np.pi * times * rng.uniform(0.1, 0.3) + rng.uniform(0, 6))
    blinks = set()
    t = rng.uniform(0.5, 2.0)
    while t < n_frames / fps:
        first = int(t * fps)
        blinks.update(range(first, first + max(1, int(0.12 * fps))))
        t += rng.uniform(2.0, 4.5)
    return np.stack([
        render_face(persona, size, float(opening[i]), (float(sway_x[i]), float(sway_y[i])), i in blinks)
        for i in range(n_frames)
    ])

"""The call's VP8 stream is the same bytes whatever the machine's load (libvpx at a fixed speed)."""
from __future__ import annotations

import multiprocessing

import numpy as np

from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio
from avlips.perturbations.call import encode_vp8


def _busy(stop) -> None:
    while not stop.is_set():
        pass


def test_vp8_bytes_do_not_depend_on_load():
    """With a positive cpu-used, libvpx picks its speed per frame from measured encode times: under load
    the stream changes (seen on the dev machine). Coded alone and beside busy processes, it must not."""
    persona = make_persona("load", 2)
    audio = speech_like_audio(persona, 1.0, 16000, 2)
    frames = list(render_talking_clip(persona, audio, 16000, 25, 160, 2))
    pictures = list(enumerate(np.ascontiguousarray(f) for f in frames))

    def stream() -> tuple[dict, list]:
        coded = encode_vp8(pictures, 25.0, 300.0)
        return coded.sizes, [coded.decoded[i].tobytes() for i in sorted(coded.decoded)]

    quiet = stream()
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(4)]
    for process in busy:
        process.start()
    try:
        loaded = stream()
    finally:
        stop.set()
        for process in busy:
            process.join()
    assert loaded == quiet

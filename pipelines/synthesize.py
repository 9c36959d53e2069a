"""The synthesize stage: lip-sync fakes of every real clip, by every enabled generator plugin.

For each real clip (label 0) of each split, each enabled generator makes `fakes_per_clip` fakes,
each driven by the denoised speech of a clip of ANOTHER identity in the SAME split (so a fake
stays in the split of the person shown); a generator block's `splits` limits it to those splits
(a generator held out of training, seen only at test time). The driving clip is chosen by ranking the candidates by
a hash of (seed, target clip, generator, candidate): deterministic, distinct for the n-th fake of
a clip while candidates last, and unchanged for existing fakes when unrelated clips are added.

Static (IMAGE) generators get the sharpest frame with a face (variance of the Laplacian on the
face crop, among evenly sampled frames; the sharpest frame when none has a face) as a PNG.
Generators with `needs_face` fail on a target where the detector finds a face in fewer than
`min_face_fraction` of the sampled frames, unless the source is face-centred (`centred`).

A Beam pipeline over target clips (a clip's frames are inspected once for all of its fakes):
each fake is checked (an audio track, video and audio lengths within `max_av_gap_s`) and written to
`<out>/<generator>/<fake_id>.mp4`, then a `<fake_id>.json` sidecar with
its fakes.parquet row and the inputs it was made from. One final step writes fakes.parquet,
failures.parquet and synthesize_stats.json, sorted, so the bytes do not depend on the runner or
the worker count. In fakes.parquet `seconds` is the fake's length in seconds (frames / fps), so
the manifest is a function of the inputs; the wall time of generation is kept in the sidecar.

`params_hash` is the hash of the generator's name, version and settings (the same for all of its
fakes); each fake's call also gets a seed derived from the stage seed and its id.

Rerun: a fake whose mp4 and sidecar exist, made with the same params hash and call from the same
target and driving audio (paths, sizes, denoise hash), is reused untouched. Failures are not
remembered: they are tried again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from avlips.config import config_from_dict
from avlips.errors import AvlipsInputError
from avlips.generators.base import IMAGE
from avlips.generators.registry_cli import STAGE_KEYS as GENERATOR_STAGE_KEYS
from avlips.media.ffmpeg_binary import configure_ffmpeg, use_ffmpeg
from avlips.pipelines import storage
from avlips.pipelines.progress import WorkerProgress
from avlips.pipelines.beam_options import counter_value, pipeline_options
from avlips.pipelines.failures import Failure, check_threshold, write_manifest_and_failures

STAGE = "synthesize"
log = logging.getLogger("avlips.synthesize")

FAKE_SCHEMA = pa.schema([
    ("fake_id", pa.string()), ("path", pa.string()), ("target_clip", pa.string()), ("driving_clip", pa.string()),
    ("driving_audio", pa.string()), ("generator", pa.string()), ("generator_version", pa.string()),
    ("params_hash", pa.string()), ("seconds", pa.float64()), ("frames", pa.int64()), ("fps", pa.float64()),
])

_progress = WorkerProgress("synthesize", "fakes", every=10)  # per worker process
_generators: dict[str, Any] = {}  # per worker process: loaded generator (or the error that stopped it), by spec


class SynthesizeInputError(AvlipsInputError, ValueError):
    """The stage cannot run at all: a manifest missing or lacking columns (bad settings are a ParamsError)."""


@dataclass(frozen=True)
class SynthesizeConfig:
    """params.yaml `synthesize`: the stage's knobs, and each generator's block under `generators`."""

    clips: str | None = None  # the corpus stage's clips.parquet (avlips synthesize --clips)
    audio: str | None = None  # the denoise stage's audio.parquet: the driving speech (--audio)
    out: str | None = None  # the fakes directory (--out)
    fakes_per_clip: int = 1  # per enabled generator (a generator block may set its own)
    min_driving_s: float = 1.0  # shorter driving speech: TooShort failure
    silence_dbfs: float = -60.0  # driving speech at or below this RMS: SilentAudio failure
    min_face_fraction: float = 0.5  # needs_face generators: a face in fewer sampled frames -> NoFace
    face_sample_frames: int = 16  # frames sampled per target: face check, and the still for static generators
    max_av_gap_s: float = 0.5  # a fake whose video and audio lengths differ by more is a failure (a length tell)
    max_failure_fraction: float = 0.5
    # LSE-C below which a fake is not kept (None: off). Applied by the sync_quality stage, the first with an
    # expert (pipelines/sync_quality.py); this stage only accepts the key.
    min_sync_confidence: float | None = None
    # name -> block: `enabled`, `fakes_per_clip`, `splits` are the stage's, other keys go to the generator.
    generators: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "SynthesizeConfig":
        """The config of params.yaml's `synthesize` block; an unknown key or a mistyped value is a ParamsError."""
        return config_from_dict(cls, params.get("synthesize"), "synthesize")

    def enabled_generators(self) -> dict[str, dict]:
        """{name: block} of the generators to run, by name; a block without `enabled` is taken as meant to run."""
        blocks = {str(name): dict(block or {}) for name, block in (self.generators or {}).items()}
        return {name: block for name, block in sorted(blocks.items()) if bool(block.get("enabled", True))}


def _not_set(key: str) -> str:
    from avlips.params import not_set

    raise not_set(f"synthesize.{key}", f"--{key}")


def _safe(text: str) -> str:
    """`text` as an ASCII name without '.' or '/': unchanged when already safe, else cleaned plus a hash."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    if clean == text:
        return text
    return f"{clean}_{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def fake_id_for(clip_id: str, generator: str, n: int) -> str:
    """The id of the n-th fake of a clip by a generator: `<clip_id>-<generator>-<n>`, ASCII, no '.' or '/'."""
    return f"{_safe(clip_id)}-{_safe(generator)}-{n}"


def _rank(seed: int, clip_id: str, generator: str, candidate: str) -> str:
    return hashlib.sha256(f"{seed}:{clip_id}:{generator}:{candidate}".encode("utf-8")).hexdigest()


def choose_driving(seed: int, clip_id: str, generator: str, n: int, candidates: list[str]) -> str:
    """The driving clip of the n-th fake: candidates ranked by a hash of (seed, clip, generator, candidate)."""
    ranked = sorted(candidates, key=lambda c: (_rank(seed, clip_id, generator, c), c))
    return ranked[n % len(ranked)]


def _fake_seed(seed: int, fake_id: str) -> int:
    """A per-fake seed for generators with randomness, from the stage seed and the fake's id."""
    return int(hashlib.sha256(f"{seed}:{fake_id}".encode("utf-8")).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------------------------
# Generators: readiness in the launching process, instances cached in each worker


def generator_spec(name: str, block: dict) -> dict:
    """What the stage needs to know of an enabled generator: settings, version, kind, readiness."""
    from avlips.generators.base import VIDEO, GeneratorError, load_generator

    settings = {k: v for k, v in block.items() if k not in GENERATOR_STAGE_KEYS}
    spec = {"name": name, "settings": settings, "version": "?", "input_kind": VIDEO, "needs_face": True,
            "ready": False, "reason": "", "fakes_per_clip": block.get("fakes_per_clip"),
            "splits": _splits_of(name, block.get("splits"))}
    try:
        generator = load_generator(name, settings)
        spec.update(version=str(generator.version), input_kind=str(generator.input_kind),
                    needs_face=bool(getattr(generator, "needs_face", True)))
        state = generator.check()
        spec.update(ready=bool(state.ready), reason=state.reason or ("" if state.ready else "check() failed"))
    except Exception as exc:  # a plugin that fails to load or to check is that plugin's problem
        spec["reason"] = str(exc) if isinstance(exc, GeneratorError) else f"{type(exc).__name__}: {exc}"
    return spec


def _splits_of(name: str, value: Any) -> list[str] | None:
    """A generator block's `splits` (the splits whose clips it makes fakes of), None for all of them."""
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"synthesize.generators.{name}.splits must be a list of split names, got {value!r}")
    return sorted(set(value))


def _generator(spec: dict):
    """This worker's instance of a generator (loaded once per process), or raise why it cannot run."""
    from avlips.generators.base import GeneratorNotReady, load_generator

    key = json.dumps([spec["name"], spec["settings"]], sort_keys=True, default=str)
    if key not in _generators:
        try:
            _generators[key] = load_generator(spec["name"], spec["settings"])
        except Exception as exc:  # remembered, so a broken plugin is not reloaded for every fake
            _generators[key] = GeneratorNotReady(str(exc))
    found = _generators[key]
    if isinstance(found, Exception):
        raise found
    return found


def _params_hash(spec: dict, face_sample_frames: int) -> str:
    """The hash of how a generator is set up: name, version, settings (the same for all of its fakes)."""
    from avlips.generators.base import params_hash

    # The still a static generator is given depends on how many frames were searched for it.
    still = {"face_sample_frames": face_sample_frames} if spec["input_kind"] == IMAGE else None
    return params_hash({"generator": spec["name"], "version": spec["version"], "settings": spec["settings"],
                        "still": still})


# ----------------------------------------------------------------------------------------------
# Planning: which fakes each real clip gets, and from whose speech


def plan(clips: list[dict], audio: dict[str, dict], specs: list[dict], seed: int, stage: SynthesizeConfig
         ) -> tuple[list[dict], list[Failure], dict[str, int]]:
    """(work items, one per target clip; failures known before any work; planned fakes per generator)."""
    drivers: dict[str, list[tuple[str, str]]] = {}
    for clip in clips:
        if int(clip["label"]) == 0 and clip["clip_id"] in audio:
            drivers.setdefault(clip["split"], []).append((clip["clip_id"], clip["identity"]))
    items, failures = [], []
    planned = {spec["name"]: 0 for spec in specs}
    for clip in sorted((c for c in clips if int(c["label"]) == 0), key=lambda c: c["clip_id"]):
        fakes = []
        candidates = [cid for cid, identity in drivers.get(clip["split"], []) if identity != clip["identity"]]
        for spec in specs:
            if spec["splits"] is not None and clip["split"] not in spec["splits"]:
                continue  # e.g. a generator held out of training, seen only in the test split
            count = int(spec["fakes_per_clip"] if spec["fakes_per_clip"] is not None else stage.fakes_per_clip)
            for n in range(count):
                fake_id = fake_id_for(clip["clip_id"], spec["name"], n)
                planned[spec["name"]] += 1
                where = f"{clip['path']}#{fake_id}"
                if not spec["ready"]:
                    failures.append(Failure(where, STAGE, "GeneratorNotReady", f"{spec['name']}: {spec['reason']}"))
                    continue
                if not candidates:
                    failures.append(Failure(where, STAGE, "NoDrivingAudio",
                                            f"no clip of another identity in split {clip['split']!r} "
                                            f"has denoised audio to drive {fake_id}"))
                    continue
                driving = choose_driving(seed, clip["clip_id"], spec["name"], n, candidates)
                call = {"seed": _fake_seed(seed, fake_id)}
                fakes.append({"fake_id": fake_id, "generator": spec["name"], "n": n, "driving_clip": driving,
                              "driving_audio": audio[driving]["path"],
                              "driving_hash": audio[driving].get("params_hash") or "", "call": call,
                              "params_hash": _params_hash(spec, stage.face_sample_frames)})
        if fakes:
            row = {k: clip[k] for k in ("clip_id", "path", "identity", "split", "fps", "frames", "duration")}
            items.append({"clip": {**row, "centred": bool(clip.get("centred") or False)}, "fakes": fakes})
    return items, failures, planned


# ----------------------------------------------------------------------------------------------
# Work: one target clip, all of its fakes


def _size(path: str) -> int:
    """Size in bytes of a file on any Beam filesystem, -1 when it cannot be read."""
    try:
        return int(FileSystems.get_filesystem(path).metadata(path).size_in_bytes)
    except Exception:  # missing or unreadable: the fake is redone and fails there
        return -1


def _local(path: str, scratch: str) -> str:
    """A local path for `path`: itself when local, else a copy in `scratch` (generators need files)."""
    if "://" not in path:
        return path
    local = os.path.join(scratch, hashlib.sha256(path.encode()).hexdigest()[:12] + "_" + os.path.basename(path))
    if not os.path.exists(local):
        with open(local, "wb") as handle:
            handle.write(storage.read_bytes(path))
    return local


def _fake_paths(out_dir: str, fake: dict) -> tuple[str, str]:
    directory = storage.join(out_dir, _safe(fake["generator"]))
    return storage.join(directory, f"{fake['fake_id']}.mp4"), storage.join(directory, f"{fake['fake_id']}.json")


def _inputs_of(clip: dict, fake: dict) -> dict:
    """What a finished fake was made from; a rerun reuses it only when all of this is unchanged."""
    return {"target": clip["path"], "target_size": _size(clip["path"]), "driving_clip": fake["driving_clip"],
            "driving_audio": fake["driving_audio"], "driving_size": _size(fake["driving_audio"]),
            "driving_hash": fake["driving_hash"], "params_hash": fake["params_hash"], "call": fake["call"]}


def _finished_row(out_dir: str, clip: dict, fake: dict) -> dict | None:
    """The row of an earlier run's fake, when its files are complete and it was made the same way."""
    video, sidecar = _fake_paths(out_dir, fake)
    record = storage.read_finished_record(sidecar, video)
    if record is None:
        return None
    row = record.get("row") or {}
    if record.get("inputs") != _inputs_of(clip, fake) or row.get("path") != video:
        return None
    return row


def inspect_target(path: str, frames: int, samples: int) -> dict:
    """Face presence over evenly sampled frames, and the sharpest frame with a face (else the sharpest)."""
    import cv2

    from avlips.media.faces import detect_face
    from avlips.media.frames import FrameReader

    best_face: tuple[float, int, np.ndarray] | None = None
    best_any: tuple[float, int, np.ndarray] | None = None
    found = 0
    with FrameReader(path) as reader:
        # The file's own count: a manifest's `frames` may be stale or estimated, and a frame past the end fails.
        frames = len(reader.index.pts) or frames
        indices = sorted({int(i) for i in np.linspace(0, max(frames - 1, 0), max(1, min(samples, frames))).round()})
        for index in indices:
            frame = reader.read([index])[0]  # one at a time: a long HD clip's samples need not all fit
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            sharp = float(cv2.Laplacian(gray, cv2.CV_64F).var())
            if best_any is None or sharp > best_any[0]:
                best_any = (sharp, index, frame)
            box = detect_face(frame)
            if box is None:
                continue
            found += 1
            x1, y1 = max(int(box.x1), 0), max(int(box.y1), 0)
            x2, y2 = min(int(round(box.x2)), frame.shape[1]), min(int(round(box.y2)), frame.shape[0])
            if x2 - x1 < 3 or y2 - y1 < 3:
                continue
            # Sharpness on the face only: a sharp background must not win over a blurred face.
            face_sharp = float(cv2.Laplacian(gray[y1:y2, x1:x2], cv2.CV_64F).var())
            if best_face is None or face_sharp > best_face[0]:
                best_face = (face_sharp, index, frame)
    chosen = best_face or best_any
    return {"face_fraction": found / len(indices), "sampled": len(indices), "faces": found,
            "still_index": chosen[1], "still": chosen[2], "still_has_face": best_face is not None}


def check_driving(path: str, min_seconds: float, silence_dbfs: float, sample_rate: int = 16000) -> float:
    """The driving audio's duration; raises TooShort or SilentAudio when it cannot drive lips."""
    from avlips.media.audio import is_silent
    from avlips.media.denoise import SilentAudio
    from avlips.media.errors import TooShort
    from avlips.media.audio_decode import read_audio

    audio = read_audio(path, sample_rate, mono=True)
    seconds = len(audio) / sample_rate
    if seconds < min_seconds:
        raise TooShort(path, f"driving audio is {seconds:.2f}s, shorter than {min_seconds:g}s")
    if is_silent(audio, silence_dbfs):
        raise SilentAudio(path, f"driving audio is silent (RMS at or below {silence_dbfs:g} dBFS)")
    return seconds


def make_fakes(item: dict, out_dir: str, stage: SynthesizeConfig, specs: dict[str, dict],
               ffmpeg: str | None = None) -> list[dict]:
    """Every planned fake of one target clip: records {'fake': row} or {'failure': row}, with 'generator'.

    `ffmpeg`: the binary the stage chose (a worker process does not share the stage's choice).
    """
    if ffmpeg:
        use_ffmpeg(ffmpeg)
    _progress.start()
    clip, results, todo = item["clip"], [], []
    for fake in item["fakes"]:
        try:
            reused = _finished_row(out_dir, clip, fake)
        except Exception:  # an unreadable earlier output: make the fake again
            reused = None
        if reused is not None:
            Metrics.counter(STAGE, "reused").inc()
            results.append({"generator": fake["generator"], "fake": reused})
        else:
            todo.append(fake)
    if todo:
        with tempfile.TemporaryDirectory(prefix="avlips-synth-") as scratch:
            results += _make_todo(clip, todo, out_dir, stage, specs, scratch)
    for result in results:
        _progress.count(result)
    return results


def _make_todo(clip: dict, todo: list[dict], out_dir: str, stage: SynthesizeConfig, specs: dict[str, dict],
               scratch: str) -> list[dict]:
    """Make the fakes of one clip that are not finished yet."""
    results: list[dict] = []
    facts: dict | Exception | None = None
    driving_checked: dict[str, float | Exception] = {}
    try:
        video = _local(clip["path"], scratch)
    except Exception as exc:
        return [_failure(clip, fake, exc) for fake in todo]
    for fake in todo:
        spec = specs[fake["generator"]]
        # A face-centred source (the demo, AVLips' released crops) is trusted to show a face, as compose
        # trusts it: there the cascade's misses on its crops would say nothing about the clip.
        face_check = spec["needs_face"] and not clip["centred"]
        try:
            if face_check or spec["input_kind"] == IMAGE:
                if facts is None:
                    try:  # once per clip, for every generator that needs faces or a still
                        facts = inspect_target(video, int(clip["frames"]), stage.face_sample_frames)
                    except Exception as exc:
                        facts = exc
                if isinstance(facts, Exception):
                    raise facts
                if face_check and facts["face_fraction"] < stage.min_face_fraction:
                    from avlips.media.errors import NoFace

                    raise NoFace(clip["path"], f"face found in {facts['faces']} of {facts['sampled']} sampled frames "
                                               f"(need {stage.min_face_fraction:.0%}) for {spec['name']}")
            if fake["driving_audio"] not in driving_checked:
                try:
                    local_audio = _local(fake["driving_audio"], scratch)
                    driving_checked[fake["driving_audio"]] = check_driving(
                        local_audio, stage.min_driving_s, stage.silence_dbfs)
                except Exception as exc:
                    driving_checked[fake["driving_audio"]] = exc
            seconds = driving_checked[fake["driving_audio"]]
            if isinstance(seconds, Exception):
                raise seconds
            results.append(_make_one(clip, fake, spec, video, facts, float(seconds), out_dir, scratch,
                                     stage.max_av_gap_s))
            Metrics.counter(STAGE, "made").inc()
        except Exception as exc:  # every failure of one fake is a record, never a crash of the stage
            results.append(_failure(clip, fake, exc))
    return results


def _failure(clip: dict, fake: dict, exc: BaseException) -> dict:
    Metrics.counter(STAGE, "failed").inc()
    message = str(exc) or type(exc).__name__
    return {"generator": fake["generator"],
            "failure": Failure(f"{clip['path']}#{fake['fake_id']}", STAGE, type(exc).__name__,
                               f"{fake['fake_id']} (driving {fake['driving_clip']}): {message}").to_row()}


def _make_one(clip: dict, fake: dict, spec: dict, video: str, facts: dict | None, driving_seconds: float,
              out_dir: str, scratch: str, max_av_gap_s: float = SynthesizeConfig.max_av_gap_s) -> dict:
    """Make one fake in scratch, check it, then move it and its sidecar into place."""
    import cv2

    from avlips.generators.base import DrivingAudio, GeneratorError, Target
    from avlips.media.probe import probe

    generator = _generator(spec)
    target_path = video
    if spec["input_kind"] == IMAGE:
        target_path = os.path.join(scratch, f"{_safe(clip['clip_id'])}_still.png")
        if not os.path.exists(target_path):
            cv2.imwrite(target_path, cv2.cvtColor(facts["still"], cv2.COLOR_RGB2BGR))
    target = Target(clip_id=clip["clip_id"], path=target_path, fps=float(clip["fps"]), frames=int(clip["frames"]),
                    duration=float(clip["duration"]), video_path=video)
    driving = DrivingAudio(clip_id=fake["driving_clip"], path=_local(fake["driving_audio"], scratch),
                           duration=driving_seconds)
    made = os.path.join(scratch, f"{fake['fake_id']}.mp4")
    started = time.perf_counter()
    result = generator.generate(target, driving, made, dict(fake["call"]))
    elapsed = round(time.perf_counter() - started, 3)
    produced = str(result.path or made)
    if not os.path.isfile(produced):
        raise GeneratorError(f"{spec['name']} reported {produced} but wrote no file there")
    info = probe(produced)
    if not info.has_audio:
        raise GeneratorError(f"{spec['name']} wrote {produced} without an audio track")
    # Lips that stop while the speech goes on (or the reverse) would let the detector judge by length.
    if abs(info.duration - info.audio_duration) > max_av_gap_s:
        raise GeneratorError(f"{spec['name']} wrote {info.frames} frames ({info.duration:.2f} s of video) with "
                             f"{info.audio_duration:.2f} s of audio; they may differ by {max_av_gap_s:g} s at most")
    final, sidecar = _fake_paths(out_dir, fake)
    with open(produced, "rb") as handle:
        storage.write_bytes(final, handle.read())
    row = {"fake_id": fake["fake_id"], "path": final, "target_clip": clip["clip_id"],
           "driving_clip": fake["driving_clip"], "driving_audio": fake["driving_audio"],
           "generator": spec["name"], "generator_version": spec["version"], "params_hash": fake["params_hash"],
           "seconds": round(info.frames / info.fps, 6) if info.fps else 0.0, "frames": int(info.frames),
           "fps": round(float(info.fps), 6)}  # frames / duration: 1e-15 noise kept out of the manifest
    provenance = result.provenance()
    provenance.pop("path", None)
    record = {"row": row, "inputs": _inputs_of(clip, fake), "generation_seconds": elapsed,
              "provenance": provenance,
              "still_index": facts["still_index"] if spec["input_kind"] == IMAGE and facts else None}
    # Written after the video: its presence says the video is complete.
    storage.write_bytes(sidecar, (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode())
    return {"generator": spec["name"], "fake": row}


# ----------------------------------------------------------------------------------------------
# Manifests and the stage


def write_manifests(results: list[list[dict]], out_dir: str, extra_failures: list[dict], planned: dict[str, int],
                    specs: list[dict], targets: int, ffmpeg: dict | None = None) -> dict:
    """Write fakes.parquet, failures.parquet and synthesize_stats.json, sorted; return the stats."""
    records = [record for batch in results for record in batch]
    rows = sorted((r["fake"] for r in records if "fake" in r), key=lambda row: row["fake_id"])
    failures = [Failure(**r["failure"]) for r in records if "failure" in r]
    failures += [Failure(**row) for row in extra_failures]
    by_error = write_manifest_and_failures(out_dir, "fakes.parquet", rows, FAKE_SCHEMA, failures)
    made = {name: 0 for name in planned}
    for row in rows:
        made[row["generator"]] = made.get(row["generator"], 0) + 1
    per_generator = {
        spec["name"]: {"version": spec["version"], "input": spec["input_kind"], "ready": spec["ready"],
                       "reason": spec["reason"], "planned": planned.get(spec["name"], 0),
                       "fakes": made.get(spec["name"], 0),
                       "failures": planned.get(spec["name"], 0) - made.get(spec["name"], 0)}
        for spec in specs
    }
    # Only facts of the outputs: the stats bytes are the same for a fresh run and a rerun.
    stats = {"stage": STAGE, "targets": targets, "inputs": sum(planned.values()), "fakes": len(rows),
             "failures": len(failures), "failures_by_error": by_error,
             "generators": per_generator, "seconds_of_video": round(sum(row["seconds"] for row in rows), 3)}
    if ffmpeg is not None:
        stats["ffmpeg"] = ffmpeg  # the binary (path, version) that encodes and muxes: the bytes depend on it
    storage.write_json(storage.join(out_dir, "synthesize_stats.json"), stats)
    return stats


def _read_manifest(path: str, columns: tuple[str, ...], what: str, optional: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a manifest with the columns the stage reads (and the optional ones it has)."""
    if not path or not storage.exists(path):
        raise SynthesizeInputError(f"{path}: no such {what} manifest (run the {what} stage first)")
    table = storage.read_parquet(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SynthesizeInputError(f"{path}: missing column(s) {', '.join(missing)}")
    return table.select(list(columns) + [c for c in optional if c in table.column_names]).to_pylist()


def run_synthesize(out_dir: str, params: dict, runner: str = "DirectRunner", workers: int = 1,
                   beam_args: tuple[str, ...] = ()) -> dict:
    """Run the synthesize stage; returns its stats (plus this run's `made` and `reused` counts).

    Raises SynthesizeInputError when it cannot run and StageFailed above the failure threshold.
    """
    started = time.time()
    stage = SynthesizeConfig.from_params(params)
    blocks = stage.enabled_generators()
    ffmpeg = configure_ffmpeg(params)  # a bad media.ffmpeg stops the stage before it writes anything
    seed = int(params.get("seed", 0))
    clips = _read_manifest(stage.clips or _not_set("clips"), ("clip_id", "identity", "path", "label", "split", "fps", "frames",
                                            "duration"), "corpus", optional=("centred",))
    audio = {row["clip_id"]: row for row in _read_manifest(stage.audio or _not_set("audio"), ("clip_id", "path", "duration",
                                                                            "params_hash"), "denoise")}
    specs = [generator_spec(name, block) for name, block in blocks.items()]
    for spec in specs:
        log.info("synthesize: generator %s v%s %s%s", spec["name"], spec["version"],
                 "ready" if spec["ready"] else "NOT READY", "" if spec["ready"] else f" ({spec['reason']})")
    if not specs:
        log.warning("synthesize: no generator is enabled (params.yaml synthesize.generators)")
    items, failures, planned = plan(clips, audio, specs, seed, stage)
    targets = sum(1 for c in clips if int(c["label"]) == 0)
    log.info("synthesize: %d real clips, %d fakes planned, %d to try", targets, sum(planned.values()),
             sum(len(i["fakes"]) for i in items))
    storage.makedirs(out_dir)
    by_name = {spec["name"]: spec for spec in specs}
    pipeline = beam.Pipeline(options=pipeline_options(runner, workers, beam_args))
    with _progress.running(sum(len(item["fakes"]) for item in items)), pipeline:
        _ = (
            pipeline
            | "Targets" >> beam.Create(items, reshuffle=len(items) > 1)
            | "Synthesize" >> beam.Map(make_fakes, out_dir, stage, by_name, ffmpeg.path)
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(write_manifests, out_dir, [f.to_row() for f in failures], planned, specs, targets,
                                  ffmpeg.to_dict())
        )
    stats = storage.read_json(storage.join(out_dir, "synthesize_stats.json"))
    made, reused = counter_value(pipeline.result, STAGE, "made"), counter_value(pipeline.result, STAGE, "reused")
    log.info("synthesize done: inputs=%d fakes=%d (made=%d reused=%d) failures=%d (%s) in %.1fs", stats["inputs"],
             stats["fakes"], made, reused, stats["failures"],
             ", ".join(f"{k}={v}" for k, v in stats["failures_by_error"].items()) or "none", time.time() - started)
    check_threshold(STAGE, stats["inputs"], stats["failures"], stage.max_failure_fraction)
    return {**stats, "made": made, "reused": reused}

"""Source adapters: where a corpus's clips come from, as a list of candidates to probe.

`demo` (made on the fly), `folder:<dir>`, `avlips:<dir>` (the released layout) and
`manifest:<csv|parquet>`. An adapter only lists; probing and failure records are the corpus
stage's job, so every listed file ends as a clip or a failure.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from avlips.errors import AvlipsInputError

LABEL_DIRS = {"0_real": 0, "1_fake": 1, "real": 0, "fake": 1}
# Sidecar and metadata files that sit beside videos and are not clips themselves.
NOT_CLIPS = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".txt", ".md", ".json", ".csv",
             ".tsv", ".parquet", ".yaml", ".yml", ".dvc", ".gitignore", ".lock", ".part"}
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
DEMO_DEFAULTS = {"identities": 8, "clips_per_identity": 2, "duration_s": 4.0, "fps": 25, "size": 128,
                 "sample_rate": 16000, "noise_level": 0.01}


@dataclass(frozen=True)
class Candidate:
    """One input that may become a clip."""

    clip_id: str
    path: str
    label: int  # 0 real, 1 fake
    identity: str
    audio_path: str = ""  # sidecar audio; empty means the video's own track
    generator: str = ""  # for fakes given as input: the generator if known, else "unknown"
    centred: bool = False  # frames are already face-centred crops
    source: str = ""

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


class SourceError(AvlipsInputError, ValueError):
    """A source specification cannot be used at all (unknown kind, missing root)."""


def slug(text: str) -> str:
    """An ASCII, filename-safe form of any text (non-ASCII names are transliterated or dropped)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_text).strip("-.")
    return cleaned[:48] or "clip"


def clip_id_for(relative_path: str) -> str:
    """A stable, unique, ASCII id: a readable stem plus a hash of the path relative to the source root."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:10]
    return f"{slug(Path(relative_path).stem)}-{digest}"


def label_from_parts(parts: tuple[str, ...]) -> int | None:
    """0/1 from a `0_real` / `1_fake` directory in the path, None when there is none."""
    for part in reversed(parts):
        if part in LABEL_DIRS:
            return LABEL_DIRS[part]
    return None


def folder_candidates(root: str, identity_from: str = "parent", default_label: int = 0) -> list[Candidate]:
    """Every file under `root` that is not a sidecar: labels from 0_real/1_fake directories."""
    base = Path(root)
    if not base.is_dir():
        raise SourceError(f"{root}: folder source is not a directory")
    out = []
    for path in sorted(p for p in base.rglob("*") if p.is_file() or p.is_symlink()):
        relative = path.relative_to(base)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() in NOT_CLIPS:
            continue
        dirs = relative.parts[:-1]
        label = label_from_parts(dirs)
        identity_dirs = [d for d in dirs if d not in LABEL_DIRS]
        if identity_from == "parent" and identity_dirs:
            identity = identity_dirs[-1]
        elif identity_from in ("parent", "stem"):
            identity = path.stem
        else:
            raise SourceError(f"identity_from must be 'parent' or 'stem', got {identity_from!r}")
        out.append(Candidate(
            clip_id=clip_id_for(relative.as_posix()), path=str(path), label=default_label if label is None else label,
            identity=identity, audio_path=_sidecar_audio(path), generator="unknown" if label == 1 else "",
            source="folder",
        ))
    return out


def _sidecar_audio(video: Path) -> str:
    for ext in AUDIO_EXTS:
        candidate = video.with_suffix(ext)
        if candidate.exists():
            return str(candidate)
    return ""


def avlips_candidates(root: str) -> list[Candidate]:
    """The released AVLips layout: 0_real/*.mp4, 1_fake/*.mp4, audio from wav/<label dir>/<stem>.wav.

    The release names clips by number only, with no identity information, so each clip is its
    own identity (a split by identity is then a split by clip).
    """
    base = Path(root)
    if not base.is_dir():
        raise SourceError(f"{root}: AVLips root is not a directory")
    missing = [d for d in ("0_real", "1_fake") if not (base / d).is_dir()]
    if missing:
        raise SourceError(f"{root}: not the AVLips layout (missing {', '.join(missing)})")
    out = []
    for label_dir, label in (("0_real", 0), ("1_fake", 1)):
        for path in sorted((base / label_dir).iterdir()):
            if path.name.startswith(".") or path.suffix.lower() in NOT_CLIPS or not path.is_file():
                continue
            wav = base / "wav" / label_dir / f"{path.stem}.wav"
            relative = f"{label_dir}/{path.name}"
            out.append(Candidate(
                clip_id=clip_id_for(relative), path=str(path), label=label, identity=relative,
                audio_path=str(wav) if wav.exists() else "", generator="unknown" if label else "",
                centred=True, source="avlips",
            ))
    return out


def manifest_candidates(manifest: str) -> list[Candidate]:
    """Rows of a csv or parquet manifest: `path` required; `label`, `identity`, `audio`, `generator` optional.

    Relative paths are taken from the manifest's directory.
    """
    import pandas as pd

    source = Path(manifest)
    if not source.is_file():
        raise SourceError(f"{manifest}: manifest not found")
    try:
        table = pd.read_parquet(source) if source.suffix.lower() == ".parquet" else pd.read_csv(source)
    except Exception as exc:  # pandas raises many kinds for a malformed file
        raise SourceError(f"{manifest}: cannot read manifest ({exc})") from exc
    if "path" not in table.columns:
        raise SourceError(f"{manifest}: manifest needs a 'path' column (has {list(table.columns)})")
    out = []
    for row in table.to_dict("records"):
        raw = str(row["path"])
        path = raw if os.path.isabs(raw) else str(source.parent / raw)
        audio = row.get("audio")
        audio = "" if audio is None or (isinstance(audio, float) and audio != audio) else str(audio)
        if audio and not os.path.isabs(audio):
            audio = str(source.parent / audio)
        label = row.get("label", 0)
        label = 0 if label is None or (isinstance(label, float) and label != label) else label
        label = LABEL_DIRS.get(str(label), label)
        identity = row.get("identity")
        identity = Path(raw).stem if identity is None or (isinstance(identity, float) and identity != identity) \
            else str(identity)
        generator = row.get("generator")
        generator = "" if generator is None or (isinstance(generator, float) and generator != generator) \
            else str(generator)
        out.append(Candidate(
            clip_id=clip_id_for(raw), path=path, label=int(label), identity=identity, audio_path=audio,
            generator=generator or ("unknown" if int(label) == 1 else ""), source="manifest",
        ))
    return out


def demo_candidates(out_dir: str, settings: dict, seed: int) -> list[Candidate]:
    """Write the synthetic demo clips under `out_dir` (skipping ones already there) and list them."""
    from avlips.media.encode import write_video
    from avlips.media.synthetic import make_persona, render_talking_clip, speech_like_audio

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    rate, fps, size = int(settings["sample_rate"]), float(settings["fps"]), int(settings["size"])
    for person in range(int(settings["identities"])):
        identity = f"persona{person:02d}"
        persona = make_persona(identity, seed * 1000 + person)
        for clip in range(int(settings["clips_per_identity"])):
            clip_seed = seed * 100000 + person * 100 + clip
            path = directory / f"{identity}_{clip:02d}.mp4"
            if not path.exists():
                audio = speech_like_audio(persona, float(settings["duration_s"]), rate, clip_seed,
                                          float(settings.get("noise_level", 0.01)))
                frames = render_talking_clip(persona, audio, rate, fps, size, clip_seed + 1)
                write_video(path, frames, fps, audio, rate)
            out.append(Candidate(clip_id=f"demo-{identity}-{clip:02d}", path=str(path), label=0,
                                 identity=identity, centred=True, source="demo"))
    return out


def resolve_source(spec: str, out_dir: str, params: dict) -> list[Candidate]:
    """Candidates for a source spec such as 'demo', 'folder:<dir>', 'avlips:<dir>', 'manifest:<file>'."""
    kind, _, argument = spec.partition(":")
    corpus = params.get("corpus", {})
    if kind == "demo":
        settings = {**DEMO_DEFAULTS, **params.get("demo", {})}
        return demo_candidates(os.path.join(out_dir, "demo"), settings, int(params.get("seed", 0)))
    if not argument:
        raise SourceError(f"source {spec!r} needs a path: '{kind}:<path>'")
    if kind == "folder":
        return folder_candidates(argument, corpus.get("identity_from", "parent"))
    if kind == "avlips":
        return avlips_candidates(argument)
    if kind == "manifest":
        return manifest_candidates(argument)
    raise SourceError(f"unknown source kind {kind!r} (use demo, folder:, avlips: or manifest:)")

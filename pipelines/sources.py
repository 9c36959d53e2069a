"""Source adapters: where a corpus's clips come from, as a list of candidates to probe.

`demo` (made on the fly), `folder:<dir>`, `avlips:<dir>` (the released layout) and
`manifest:<csv|parquet>`. An adapter only lists; probing and failure records are the corpus
stage's job, so every listed file ends as a clip or a failure.

Each candidate also carries what the source says of its origin and licence, for the dataset card:
a manifest's `origin` and `licence` (or `license`) columns; for a folder (or the AVLips layout),
the nearest LICENSE / LICENCE / COPYING file above the clip (its first line) and the nearest
README (its `Origin:` or `Source:` line, else its first line; a `Licence:` line when there is no
licence file). Empty when the source says nothing.
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
LICENCE_STEMS = ("license", "licence", "copying")
README_STEM = "readme"
PROVENANCE_SUFFIXES = ("", ".txt", ".md", ".rst")
DEMO_ORIGIN = "synthetic: rendered by avlips (avlips.media.synthetic), no recorded person"
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
    origin: str = ""  # where the source says the clip comes from; empty when it says nothing
    licence: str = ""  # the licence the source states; empty when it states none

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
    provenance: dict[Path, tuple[str, str]] = {}
    for path in sorted(p for p in base.rglob("*") if p.is_file() or p.is_symlink()):
        relative = path.relative_to(base)
        if (any(part.startswith(".") for part in relative.parts) or path.suffix.lower() in NOT_CLIPS
                or _is_provenance_file(path)):
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
            source="folder", **_folder_provenance(path.parent, base, provenance),
        ))
    return out


def _is_provenance_file(path: Path) -> bool:
    """A LICENSE or README file (with or without a text suffix): what a folder says of itself, not a clip."""
    stem, suffix = path.stem.lower(), path.suffix.lower()
    if suffix not in PROVENANCE_SUFFIXES:
        stem, suffix = path.name.lower(), ""
    return suffix in PROVENANCE_SUFFIXES and (stem in LICENCE_STEMS or stem == README_STEM)


def _text_lines(path: Path) -> list[str]:
    """The non-empty lines of a small text file, markdown heading marks dropped (its first 64 KiB)."""
    with open(path, "rb") as handle:
        text = handle.read(65536).decode("utf-8", errors="replace")
    lines = (line.strip().lstrip("#").strip() for line in text.splitlines())
    return [line[:200] for line in lines if line]


def _stated(lines: list[str], keys: tuple[str, ...]) -> str:
    """The value of the first `Key: value` line for one of `keys` (case-insensitive), else ''."""
    for line in lines:
        key, colon, value = line.partition(":")
        if colon and key.strip().strip("*_").lower() in keys and value.strip():
            return value.strip()
    return ""


def _folder_provenance(directory: Path, root: Path, cache: dict[Path, tuple[str, str]]) -> dict[str, str]:
    """Origin and licence for clips in `directory`: the nearest README and licence file up to `root`."""
    if directory not in cache:
        origin = licence = ""
        files = sorted(p for p in directory.iterdir() if p.is_file() and _is_provenance_file(p)) \
            if directory.is_dir() else []
        for path in files:
            lines = _text_lines(path)
            if path.name.lower().startswith(LICENCE_STEMS) and lines and not licence:
                licence = lines[0]
            elif path.name.lower().startswith(README_STEM) and lines and not origin:
                origin = _stated(lines, ("origin", "source")) or lines[0]
                licence = licence or _stated(lines, ("licence", "license"))
        if (not origin or not licence) and directory != root and root in directory.parents:
            above = _folder_provenance(directory.parent, root, cache)
            origin, licence = origin or above["origin"], licence or above["licence"]
        cache[directory] = (origin, licence)
    origin, licence = cache[directory]
    return {"origin": origin, "licence": licence}


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
    provenance = _folder_provenance(base, base, {})  # the release's own LICENSE / README, if kept beside it
    for label_dir, label in (("0_real", 0), ("1_fake", 1)):
        for path in sorted((base / label_dir).iterdir()):
            if path.name.startswith(".") or path.suffix.lower() in NOT_CLIPS or not path.is_file():
                continue
            wav = base / "wav" / label_dir / f"{path.stem}.wav"
            relative = f"{label_dir}/{path.name}"
            out.append(Candidate(
                clip_id=clip_id_for(relative), path=str(path), label=label, identity=relative,
                audio_path=str(wav) if wav.exists() else "", generator="unknown" if label else "",
                centred=True, source="avlips", **provenance,
            ))
    return out


def manifest_candidates(manifest: str) -> list[Candidate]:
    """Rows of a csv or parquet manifest: `path` required; `label`, `identity`, `audio`, `generator`,
    `origin`, `licence` (or `license`) optional.

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
            origin=_text_cell(row.get("origin")), licence=_text_cell(row.get("licence", row.get("license"))),
        ))
    return out


def _text_cell(value) -> str:
    """A manifest cell as text: missing (None or NaN) is ''."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


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
                                 identity=identity, centred=True, source="demo", origin=DEMO_ORIGIN))
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

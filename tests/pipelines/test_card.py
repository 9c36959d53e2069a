"""The dataset card: counts, identities, durations, provenance, failures, hashes, leaks, and its stable bytes."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from avlips.cli import main
from avlips.params import package_defaults
from avlips.media.checksums import file_sha256
from avlips.pipelines.card import build_card, card_json, write_card
from avlips.pipelines.failures import SCHEMA as FAILURE_SCHEMA
from avlips.pipelines.sources import folder_candidates
from avlips.pipelines.storage import write_parquet

# The crafted build: identity -> (split, durations of its clips).
PEOPLE = {"alice": ("train", [2.0, 3.0]), "bob": ("train", [2.0, 3.0]), "carol": ("train", [2.0, 3.0]),
          "dave": ("train", [2.0, 3.0]), "erin": ("val", [2.5]), "frank": ("val", [2.5]),
          "gina": ("test", [4.0]), "hank": ("test", [4.0])}
WINDOWS_PER_VIDEO = 2
PERTURB_CELLS = [("gaussian_blur", 1), ("gaussian_blur", 2), ("opus", 3)]


def _tar(path: Path, keys: list[str]) -> None:
    """A small real tar: one member per window key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in keys:
            data = key.encode() * 50
            info = tarfile.TarInfo(f"{key}.json")
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())


def _failures(path: Path, rows: list[tuple[str, str, str]], stage: str) -> None:
    write_parquet(str(path), [{"input": i, "stage": stage, "error": e, "message": m} for i, e, m in rows],
                  FAILURE_SCHEMA)


def crafted_build(root: Path, people: dict = PEOPLE, failures: bool = False, sync: bool = False) -> dict:
    """The stage outputs of a small build, written as the stages write them; returns the params."""
    data = root / "data"
    clips = []
    for identity, (split, durations) in people.items():
        for i, seconds in enumerate(durations):
            clips.append({"clip_id": f"{identity}-{i}", "identity": identity, "path": f"v/{identity}{i}.mp4",
                          "label": 0, "split": split, "source": "manifest", "generator": "", "centred": True,
                          "duration": seconds, "origin": "https://example.org/talks" if identity < "e" else "",
                          "licence": "CC BY 4.0" if identity < "e" else ""})
    (data / "corpus").mkdir(parents=True)
    pd.DataFrame(clips).to_parquet(data / "corpus" / "clips.parquet")
    fakes = []
    by_split = {}
    for clip in clips:
        by_split.setdefault(clip["split"], []).append(clip)
    for split, members in by_split.items():
        for clip in members:
            driver = next(c for c in members if c["identity"] != clip["identity"])
            generators = ["mouth_rewrite"] + (["audio_swap"] if split == "test" else [])
            for generator in generators:
                row = {"fake_id": f"{generator}-{clip['clip_id']}", "path": f"f/{clip['clip_id']}.mp4",
                       "target_clip": clip["clip_id"], "driving_clip": driver["clip_id"], "driving_audio": "",
                       "generator": generator, "generator_version": "1.0" if generator == "mouth_rewrite" else "0.3",
                       "params_hash": "aa11" if generator == "mouth_rewrite" else "bb22",
                       "seconds": clip["duration"], "frames": int(clip["duration"] * 25), "fps": 25.0}
                fakes.append(row)
    (data / "fakes").mkdir(parents=True)
    pd.DataFrame(fakes).to_parquet(data / "fakes" / "fakes.parquet")
    (data / "fakes" / "synthesize_stats.json").write_text(json.dumps({
        "inputs": len(fakes) + 2 * failures, "ffmpeg": {"path": "/x/ffmpeg", "version": "ffmpeg version 7.0.2"},
        "generators": {"mouth_rewrite": {"version": "1.0", "input": "video", "ready": True, "reason": "",
                                         "planned": 12, "fakes": 12, "failures": 0},
                       "wav2lip": {"version": "2.0", "input": "video", "ready": False,
                                   "reason": "checkpoint not set", "planned": 0, "fakes": 0, "failures": 0}}}))
    windows = []
    for video in clips + [{**f, "identity": next(c["identity"] for c in clips if c["clip_id"] == f["target_clip"]),
                           "split": next(c["split"] for c in clips if c["clip_id"] == f["target_clip"]),
                           "label": 1, "clip_id": f["fake_id"]} for f in fakes]:
        for w in range(WINDOWS_PER_VIDEO):
            windows.append({"key": f"{video['clip_id']}-w{w}", "shard": f"{video['split']}-000000",
                            "split": video["split"], "label": video["label"], "clip": video["clip_id"],
                            "identity": video["identity"], "generator": video["generator"], "window": w})
    clean = data / "shards" / "clean"
    clean.mkdir(parents=True)
    pd.DataFrame(windows).to_parquet(clean / "samples.parquet")
    for split in ("train", "val", "test"):
        _tar(clean / f"{split}-000000.tar", [w["key"] for w in windows if w["split"] == split])
    perturbed = data / "shards" / "perturbed"
    test_windows = [w for w in windows if w["split"] == "test"]
    for name, level in PERTURB_CELLS:
        cell = perturbed / name / str(level)
        cell.mkdir(parents=True)
        rows = [{**w, "clean_key": w["key"], "key": f"{w['key']}-{name}{level}", "type": name, "level": level}
                for w in test_windows]
        pd.DataFrame(rows).to_parquet(cell / "samples.parquet")
        _tar(cell / "test-000000.tar", [r["key"] for r in rows])
        _failures(cell / "failures.parquet",
                  [("gina-0-w0", "MissingField", "gina-0-w0: no audio.npy")] if failures and name == "opus" else [],
                  "perturb")
    (perturbed / "perturb_stats.json").write_text(json.dumps({
        "types": sorted({n for n, _ in PERTURB_CELLS}), "levels": [1, 2, 3],
        "inputs": len(test_windows) * len(PERTURB_CELLS)}))
    # perturb_stats names a 3 x 2 grid; the cells not made above hold nothing (no samples.parquet).
    (data / "corpus" / "corpus_stats.json").write_text(json.dumps({"inputs": len(clips) + 3 * failures,
                                                                   "ffmpeg": {"version": "ffmpeg version 7.0.2"}}))
    _failures(data / "corpus" / "failures.parquet",
              [("v/a.mp4", "TooShort", "v/a.mp4: 3 frames"), ("v/b.mp4", "NoAudio", "v/b.mp4: no audio"),
               ("v/c.mp4", "TooShort", "v/c.mp4: 2 frames")] if failures else [], "corpus")
    (data / "audio").mkdir(parents=True)
    _failures(data / "audio" / "failures.parquet",
              [("alice-0", "SilentAudio", "alice-0: silent")] if failures else [], "denoise")
    _failures(data / "fakes" / "failures.parquet",
              [("mouth_rewrite:x", "GeneratorTimeout", "timed out after 60 s"),
               ("mouth_rewrite:y", "NoFace", "no face")] if failures else [], "synthesize")
    _failures(clean / "failures.parquet", [("bob-1-w1", "NoFace", "bob-1-w1: face in 1 of 5 frames")]
              if failures else [], "compose")
    params = package_defaults()
    for key, folder in (("corpus", "corpus"), ("denoise", "audio"), ("synthesize", "fakes"),
                        ("compose", "shards/clean"), ("perturb", "shards/perturbed")):
        params[key]["out"] = str(data / folder)
    params["corpus"]["source"] = "manifest:clips.csv"
    params["card"] = {"markdown": str(data / "CARD.md"), "json": str(data / "card.json")}
    params["sync_quality"]["out"] = str(data / "sync_quality.parquet")
    if sync:
        _sync_quality(data / "sync_quality.parquet", clips, fakes)
    return params


def _sync_quality(path: Path, clips: list[dict], fakes: list[dict]) -> None:
    """The sync_quality stage's table: real clips in sync, mouth_rewrite close, audio_swap off; one broken fake."""
    from avlips.pipelines.sync_quality_table import write_rows

    split_of = {c["clip_id"]: c["split"] for c in clips}
    rows = []
    for n, clip in enumerate(clips):
        rows.append({"video_id": clip["clip_id"], "kind": "real", "generator": "", "split": clip["split"],
                     "lse_c": 0.7 + 0.01 * n, "lse_d": 0.15, "best_offset": 0})
    for fake in fakes:
        swap = fake["generator"] == "audio_swap"
        rows.append({"video_id": fake["fake_id"], "kind": "fake", "generator": fake["generator"],
                     "split": split_of[fake["target_clip"]], "lse_c": 0.1 if swap else 0.45,
                     "lse_d": 0.7 if swap else 0.4,
                     "best_offset": 7 if swap else int(fake["target_clip"].endswith("-1"))})
    broken = rows[-1]  # hank's audio_swap fake
    broken.update(lse_c=None, lse_d=None, best_offset=None, error="InvalidDataError",
                  reason=f"{broken['video_id']}.mp4: invalid data found when processing input")
    full = [{"path": f"{r['video_id']}.mp4", "identity": "x", "centred": True, "audio": "", "windows": 96,
             "offsets_available": 31, "error": "", "reason": "", "kept": True, "inputs_hash": "h", **r} for r in rows]
    write_rows(str(path), full, {"expert": "models/sync_expert.pt", "expert_sha256": "ab" * 32,
                                 "released_expert": False, "offsets": 15, "min_sync_confidence": None})


@pytest.fixture
def build(tmp_path):
    return crafted_build(tmp_path)


def _count(card, split, label, generator):
    return next((r for r in card["counts"] if (r["split"], r["label"], r["generator"]) == (split, label, generator)),
                None)


def test_counts_by_split_label_generator_and_perturbation(build):
    card = build_card(build)
    assert _count(card, "train", "real", "") == {"split": "train", "label": "real", "generator": "",
                                                 "clips": 8, "fakes": 0, "windows": 8 * WINDOWS_PER_VIDEO}
    assert _count(card, "train", "fake", "mouth_rewrite")["fakes"] == 8
    assert _count(card, "train", "fake", "audio_swap") is None  # audio_swap made fakes of the test split only
    assert _count(card, "test", "fake", "audio_swap") == {"split": "test", "label": "fake", "generator": "audio_swap",
                                                          "clips": 0, "fakes": 2, "windows": 2 * WINDOWS_PER_VIDEO}
    assert [r["split"] for r in card["counts"]] == sorted((r["split"] for r in card["counts"]),
                                                          key=["train", "val", "test"].index)
    summary = card["summary"]
    assert (summary["clips"], summary["fakes"], summary["identities"]) == (12, 14, 8)
    assert summary["windows"] == (12 + 14) * WINDOWS_PER_VIDEO
    blur = [r for r in card["perturbed"]["counts"] if (r["type"], r["level"]) == ("gaussian_blur", 2)]
    assert {(r["label"], r["generator"]): r["windows"] for r in blur} == {
        ("real", ""): 4, ("fake", "mouth_rewrite"): 4, ("fake", "audio_swap"): 4}
    assert summary["perturbed_windows"] == len(PERTURB_CELLS) * 12
    # The grid perturb_stats.json names, cells without output included (they count zero windows).
    assert len(card["perturbed"]["cells"]) == 6 and "opus/1" in card["perturbed"]["cells"]


def test_identities_per_split_and_the_empty_intersections(build):
    ids = build_card(build)["identities"]
    assert ids["by_split"] == {"train": ["alice", "bob", "carol", "dave"], "val": ["erin", "frank"],
                               "test": ["gina", "hank"]}
    assert ids["intersections"] == {"train & val": [], "train & test": [], "val & test": []}
    assert ids["ok"] and ids["leaks"] == [] and "intersected" in ids["how_checked"]


def test_durations_generators_sources_params_software_and_hashes(build):
    card = build_card(build)
    assert card["durations"]["by_split"]["train"]["real"] == {"videos": 8, "total_s": 20.0, "mean_s": 2.5,
                                                              "min_s": 2.0, "max_s": 3.0}
    assert card["durations"]["by_split"]["test"]["fake"]["videos"] == 4  # two generators x two clips
    gens = card["generators"]
    assert gens["mouth_rewrite"]["versions"] == ["1.0"] and gens["mouth_rewrite"]["params_hashes"] == ["aa11"]
    assert gens["audio_swap"] == {"fakes": 2, "versions": ["0.3"], "params_hashes": ["bb22"]}
    assert gens["wav2lip"]["ready"] is False and gens["wav2lip"]["reason"] == "checkpoint not set"
    (source,) = card["sources"]
    assert source["licence"] == {"": 4, "CC BY 4.0": 8} and source["spec"] == "manifest:clips.csv"
    assert set(card["params"]) == {"seed", "media", "corpus", "demo", "denoise", "synthesize", "compose", "perturb"}
    software = card["software"]
    assert software["ffmpeg"].startswith("ffmpeg version") and software["avlips"] and software["torch"]
    assert software["ffmpeg_recorded_by_stage"] == {"corpus": "ffmpeg version 7.0.2",
                                                    "synthesize": "ffmpeg version 7.0.2"}
    clean = {Path(s["path"]).name: s for s in card["shards"]["clean"]}
    for name, shard in clean.items():
        assert shard["sha256"] == hashlib.sha256(Path(shard["path"]).read_bytes()).hexdigest()
    assert clean["val-000000.tar"]["windows"] == (2 + 2) * WINDOWS_PER_VIDEO
    assert len(card["shards"]["perturbed"]) == len(PERTURB_CELLS)
    assert card["sync_quality"]["available"] is False and "no sync expert" in card["sync_quality"]["reason"]


def test_sha256_streams_a_file_larger_than_its_chunk(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 9000)  # 2.2 MiB: three chunks
    assert file_sha256(str(big)) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_the_same_build_gives_the_same_bytes(build, tmp_path):
    write_card(build, build["card"]["markdown"], build["card"]["json"])
    first = Path(build["card"]["json"]).read_bytes(), Path(build["card"]["markdown"]).read_bytes()
    write_card(build, build["card"]["markdown"], build["card"]["json"])
    assert (Path(build["card"]["json"]).read_bytes(), Path(build["card"]["markdown"]).read_bytes()) == first
    text = first[0].decode()
    assert json.loads(text) == json.loads(card_json(json.loads(text)))
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys


def test_failed_stages_are_reported_by_error_class(tmp_path):
    params = crafted_build(tmp_path, failures=True)
    card = write_card(params, params["card"]["markdown"], params["card"]["json"])
    failures = card["failures"]
    assert failures["corpus"]["by_error"] == {"NoAudio": 1, "TooShort": 2} and failures["corpus"]["inputs"] == 15
    assert failures["denoise"]["by_error"] == {"SilentAudio": 1}
    assert failures["synthesize"]["by_error"] == {"GeneratorTimeout": 1, "NoFace": 1}
    assert failures["compose"]["by_error"] == {"NoFace": 1}
    assert failures["perturb"]["by_error"] == {"MissingField": 1}
    assert failures["perturb"]["by_cell"] == {"opus/3": {"MissingField": 1}}
    assert failures["corpus"]["examples"]["TooShort"] == "v/a.mp4: 3 frames"
    markdown = Path(params["card"]["markdown"]).read_text()
    assert "| corpus | 15 | 3 | NoAudio (1); TooShort (2) |" in markdown
    assert "GeneratorTimeout (1); NoFace (1)" in markdown and "timed out after 60 s" in markdown
    assert "| opus | 0 | 0 | 12 (1 failed) |" in markdown  # the types x levels grid
    assert card["violations"] == []  # failures are reported, not violations


def test_a_build_without_failures_says_zero_and_a_stage_not_run_says_so(build, tmp_path):
    Path(build["denoise"]["out"], "failures.parquet").unlink()
    card = build_card(build)
    assert card["failures"]["corpus"] == {"recorded": True, "failures": 0, "inputs": 12, "by_error": {},
                                          "examples": {}}
    assert card["failures"]["denoise"]["recorded"] is False


def test_an_identity_in_two_splits_is_a_violation_and_the_command_exits_1(tmp_path, monkeypatch, capsys):
    params = crafted_build(tmp_path)
    clips = pd.read_parquet(Path(params["corpus"]["out"]) / "clips.parquet")
    clips.loc[clips.clip_id == "alice-1", "split"] = "test"  # one of alice's clips moved to test
    clips.to_parquet(Path(params["corpus"]["out"]) / "clips.parquet")
    card = build_card(params)
    # alice's moved clip, and bob, whose speech drives that clip's fake (a fake goes where its target goes).
    assert card["identities"]["intersections"]["train & test"] == ["alice", "bob"]
    assert not card["identities"]["ok"]
    alice, bob = card["identities"]["leaks"]
    assert alice["identity"] == "alice" and alice["splits"] == ["train", "test"]
    assert "clips.parquet" in alice["seen_in"]["test"]
    assert bob["seen_in"]["test"] == ["fakes.parquet (driving speech)"]
    assert len(card["violations"]) == 2 and "'alice' is in splits train, test" in card["violations"][0]

    monkeypatch.chdir(tmp_path)  # the package's default params: data/... under tmp_path
    status = main(["card", "-S", "corpus.source=manifest:clips.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1
    assert err[0].startswith("avlips card: identity 'alice' is in splits train, test")
    assert err[0].endswith("(and 1 more); see data/CARD.md")
    markdown = (tmp_path / "data" / "CARD.md").read_text()
    assert "## VIOLATIONS" in markdown and "| train & test | alice, bob |" in markdown


def test_a_driving_speaker_from_another_split_is_a_leak(build):
    fakes_path = Path(build["synthesize"]["out"]) / "fakes.parquet"
    fakes = pd.read_parquet(fakes_path)
    fakes.loc[fakes.fake_id == "mouth_rewrite-gina-0", "driving_clip"] = "alice-0"  # a train speaker's voice
    fakes.to_parquet(fakes_path)
    card = build_card(build)
    (leak,) = card["identities"]["leaks"]
    assert leak["identity"] == "alice" and leak["seen_in"]["test"] == ["fakes.parquet (driving speech)"]


def test_a_listed_shard_missing_on_disk_is_a_violation(build):
    Path(build["compose"]["out"], "val-000000.tar").unlink()
    card = build_card(build)
    assert any("val-000000.tar is listed in samples.parquet but not on disk" in v for v in card["violations"])


def test_the_command_writes_both_files_and_exits_0(build, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["card", "-S", "corpus.source=manifest:clips.csv"]) == 0
    out = capsys.readouterr().out
    assert "card: identities=8 clips=12 fakes=14" in out and "violations=0" in out
    card = json.loads((tmp_path / "data" / "card.json").read_text())
    assert card["shards"]["clean"][0]["path"] == "data/shards/clean/test-000000.tar"  # as the params name it
    markdown = (tmp_path / "data" / "CARD.md").read_text()
    assert "[card.json](card.json)" in markdown and "**No identity is in two splits.**" in markdown
    assert f"{card['shards']['clean'][0]['sha256']}  data/shards/clean/test-000000.tar" in markdown


def test_without_a_corpus_the_command_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["card"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data/corpus/clips.parquet: not found" in err[0]


def test_a_manifest_missing_columns_is_named(build):
    clips = Path(build["corpus"]["out"]) / "clips.parquet"
    pd.read_parquet(clips).drop(columns=["identity"]).to_parquet(clips)
    with pytest.raises(Exception, match=r"clips.parquet: lacks the column\(s\) identity"):
        build_card(build)


def test_sync_quality_per_generator_against_the_real_baseline(tmp_path):
    params = crafted_build(tmp_path, sync=True)
    sync = write_card(params, params["card"]["markdown"], params["card"]["json"])["sync_quality"]
    assert sync["available"] and sync["expert"] == "models/sync_expert.pt" and sync["offsets"] == 15
    swap, rewrite = sync["by_generator"]["audio_swap"], sync["by_generator"]["mouth_rewrite"]
    # audio_swap: two test fakes, the last row of the table broken (not scored, a failure with its class).
    assert (swap["videos"], swap["scored"], swap["failures"]) == (2, 1, {"InvalidDataError": 1})
    assert swap["lse_c"]["median"] == 0.1 and swap["best_offset"]["counts"] == {"+7": 1}
    assert rewrite["videos"] == rewrite["scored"] == 12 and rewrite["lse_c"]["median"] == 0.45
    assert rewrite["best_offset"]["counts"] == {"0": 8, "+1": 4} and rewrite["best_offset"]["at_zero"] == 0.6667
    assert sync["real"]["videos"] == 12 and sync["real"]["best_offset"]["at_zero"] == 1.0
    assert sync["real"]["lse_c"]["median"] == pytest.approx(0.755)
    assert list(sync["real_by_split"]) == ["train", "val", "test"] and sync["real_trained_on"] == "train"
    assert "InvalidDataError" in sync["failure_examples"]
    markdown = Path(params["card"]["markdown"]).read_text()
    assert "| audio_swap | 2 | 1 | InvalidDataError 1 | 0.1 (0.1–0.1) | 0.7 (0.7–0.7) | 0% at 0 (+7: 1) |" in markdown
    assert "| real, train (the expert trained on these) | 8 | 8 |" in markdown
    assert "| **real, all (baseline)** | 12 | 12 |" in markdown and "min_sync_confidence is off" in markdown


def test_the_card_says_why_sync_quality_is_absent_and_rejects_a_foreign_table(tmp_path):
    params = crafted_build(tmp_path)
    sync = build_card(params)["sync_quality"]
    assert not sync["available"] and "sync_quality.parquet not found" in sync["reason"]
    assert "avlips sync-quality" in sync["reason"]
    pd.DataFrame({"video_id": ["a"], "lse_c": [0.5]}).to_parquet(params["sync_quality"]["out"])
    with pytest.raises(Exception, match=r"sync_quality.parquet: lacks the column\(s\) path, kind"):
        build_card(params)


# ------------------------------------------------------------------------------------------ sources


def _video(path: Path) -> Path:
    from avlips.media.encode import write_video
    from tests.builders import gradient_frames, tone

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, gradient_frames(10, 48, 64), 25, tone(10 / 25, 16000))
    return path


def test_a_manifest_source_with_licence_columns_reaches_the_card(tmp_path):
    from avlips.pipelines.corpus import run_corpus

    for name in ("a", "b", "c"):
        _video(tmp_path / "v" / f"{name}.mp4")
    pd.DataFrame({"path": ["v/a.mp4", "v/b.mp4", "v/c.mp4"], "identity": ["p1", "p2", "p3"],
                  "origin": ["https://example.org/a", "https://example.org/b", None],
                  "license": ["CC BY 4.0", "CC BY-NC 4.0", None]}).to_csv(tmp_path / "list.csv", index=False)
    params = package_defaults()
    params["corpus"].update({"out": str(tmp_path / "corpus"), "source": f"manifest:{tmp_path / 'list.csv'}",
                             "min_frames": 5})
    for key in ("denoise", "synthesize", "compose", "perturb"):
        params[key]["out"] = str(tmp_path / "absent" / key)
    run_corpus(params["corpus"]["source"], params["corpus"]["out"], params)
    clips = pd.read_parquet(tmp_path / "corpus" / "clips.parquet").set_index("identity")
    assert clips.loc["p1", "licence"] == "CC BY 4.0" and clips.loc["p3", "licence"] == ""
    assert clips.loc["p2", "origin"] == "https://example.org/b"
    card = build_card(params)
    (source,) = card["sources"]
    assert source["licence"] == {"": 1, "CC BY 4.0": 1, "CC BY-NC 4.0": 1}
    assert source["origin"]["https://example.org/a"] == 1
    assert card["summary"]["windows"] == 0 and card["shards"] == {"clean": [], "perturbed": []}
    from avlips.pipelines.card_markdown import render_markdown

    assert "not stated (1); CC BY 4.0 (1); CC BY-NC 4.0 (1)" in render_markdown(card)


def test_a_folder_states_its_licence_and_origin_in_license_and_readme_files(tmp_path):
    root = tmp_path / "videos"
    for who in ("ann", "ben"):
        (root / who).mkdir(parents=True)
        (root / who / "x.mp4").write_bytes(b"")
    (root / "LICENSE").write_text("\nCreative Commons Attribution 4.0 International\n\nYou are free to share\n")
    (root / "ben" / "README.md").write_text("# Ben's talks\n\nOrigin: https://example.org/ben\n")
    listed = {c.identity: c for c in folder_candidates(str(root))}
    assert sorted(listed) == ["ann", "ben"]  # LICENSE and README are no clips
    assert listed["ann"].licence == listed["ben"].licence == "Creative Commons Attribution 4.0 International"
    assert listed["ann"].origin == "" and listed["ben"].origin == "https://example.org/ben"


def test_a_readme_licence_line_counts_when_there_is_no_licence_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"")
    (tmp_path / "README.txt").write_text("Recorded at home\nLicence: CC0 1.0\n")
    (only,) = folder_candidates(str(tmp_path))
    assert (only.origin, only.licence) == ("Recorded at home", "CC0 1.0")


# ------------------------------------------------------------------------------------------ real stage outputs


@pytest.mark.slow
def test_the_card_of_real_corpus_and_compose_outputs(tmp_path):
    from avlips.pipelines.compose import run_compose
    from avlips.pipelines.corpus import run_corpus

    params = package_defaults()
    params["demo"].update({"identities": 4, "clips_per_identity": 1, "duration_s": 1.0, "size": 64})
    params["corpus"].update({"out": str(tmp_path / "corpus"), "splits": {"train": 0.5, "val": 0.25, "test": 0.25}})
    params["compose"].update({"clips": str(tmp_path / "corpus" / "clips.parquet"), "audio": "", "fakes": "",
                              "out": str(tmp_path / "clean"), "n_windows": 2, "frame_size": 64})
    for key in ("denoise", "synthesize", "perturb"):
        params[key]["out"] = str(tmp_path / "absent" / key)
    run_corpus("demo", params["corpus"]["out"], params)
    totals = run_compose(params["compose"]["out"], copy.deepcopy(params))
    card = build_card(params)
    windows = {}
    for row in card["counts"]:
        windows[row["split"]] = windows.get(row["split"], 0) + row["windows"]
    assert windows == totals["samples_by_split"] and card["summary"]["windows"] == totals["samples"]
    assert card["identities"]["ok"] and card["identities"]["counts"] == {"train": 2, "val": 1, "test": 1}
    (source,) = card["sources"]
    assert source["source"] == "demo" and list(source["origin"]) == [
        "synthetic: rendered by avlips (avlips.media.synthetic), no recorded person"]
    tars = sorted(Path(tmp_path / "clean").glob("*.tar"))
    assert [Path(s["path"]).name for s in card["shards"]["clean"]] == [t.name for t in tars]
    assert sum(s["windows"] for s in card["shards"]["clean"]) == totals["samples"]

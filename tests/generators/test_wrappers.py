"""Wrappers around research checkouts, run against stand-in checkouts that behave like the real scripts.

The stand-ins (tests/generators/standins/) take exactly the real scripts' arguments and write where the
real ones write; STANDIN_MODE (passed through the wrapper's `env` setting) makes them misbehave.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from avlips.generators.base import (IMAGE, VIDEO, DrivingAudio, GeneratorError, GeneratorNotReady, Readiness, Target,
                                    load_generator)
from avlips.generators.wrappers.base import ExternalCheckoutGenerator, make_overlay, tail, video_for_script
from avlips.generators.wrappers.ip_lap import IPLAP
from avlips.generators.wrappers.latentsync import LatentSync
from avlips.generators.wrappers.makeittalk import MakeItTalk, _resample_indices
from avlips.generators.wrappers.musetalk import MuseTalk
from avlips.generators.wrappers.sadtalker import SadTalker
from avlips.generators.wrappers.talklip import TalkLip
from avlips.generators.wrappers.videoretalking import VideoRetalking
from avlips.generators.wrappers.wav2lip_repo import Wav2LipRepo
from avlips.media.errors import MediaError
from avlips.media.encode import write_video
from avlips.media.frames import read_frames
from avlips.media.probe import probe
from tests.builders import (LATENTSYNC_CONFIG, SCRIPTS, checkout_tree, file_tree, make_checkout, pinned_ffmpeg,
                            stereo_speech)

NEW_KINDS = ("latentsync", "musetalk", "videoretalking", "ip_lap")  # today's generators
KINDS = ("wav2lip_repo", "talklip", "sadtalker", "makeittalk", *NEW_KINDS)
CLASSES = {"wav2lip_repo": Wav2LipRepo, "talklip": TalkLip, "sadtalker": SadTalker, "makeittalk": MakeItTalk,
           "latentsync": LatentSync, "musetalk": MuseTalk, "videoretalking": VideoRetalking, "ip_lap": IPLAP}
OUT_SIZE = {"wav2lip_repo": (96, 96), "talklip": (96, 96), "sadtalker": (256, 256), "makeittalk": (256, 256),
            "latentsync": (96, 96), "musetalk": (96, 96), "videoretalking": (96, 96), "ip_lap": (96, 96)}
# Targets at 30 fps for the scripts that must get (talklip) or make (latentsync, ip_lap) 25 fps themselves.
TARGET_FPS = {"talklip": 30.0, "latentsync": 30.0, "ip_lap": 30.0}
ORANGE, TEAL = (210, 120, 40), (40, 150, 210)  # RGB target colours, one per job
MOUTH_RGB = (160, 20, 20)  # what the stand-ins draw (standin_media.MOUTH_BGR reversed)


def make_inputs(root: Path, kind: str, colour: tuple[int, int, int], seconds: float, tag: str,
                fps: float = 25.0) -> tuple[Target, DrivingAudio]:
    """A solid-colour target (video, or image for IMAGE wrappers) and 44.1 kHz stereo driving audio."""
    wav = root / f"drive_{tag}.wav"
    soundfile.write(str(wav), stereo_speech(seconds, 44100).T, 44100)
    driving = DrivingAudio(clip_id=f"speaker_{tag}", path=str(wav), duration=seconds)
    if CLASSES[kind].input_kind == IMAGE:
        image = root / f"face_{tag}.png"
        cv2.imwrite(str(image), np.full((96, 120, 3), colour[::-1], np.uint8))  # not square: gets cropped
        return Target(f"clip_{tag}", str(image), 25.0, 1, 0.04), driving
    video = root / f"face_{tag}.mp4"
    count = int(fps)  # one second: shorter than the audio, so the scripts cycle it
    write_video(video, (np.full((96, 96, 3), colour, np.uint8) for _ in range(count)), fps)
    return Target(f"clip_{tag}", str(video), fps, count, 1.0), driving


def assert_fake(path: Path, kind: str, colour: tuple[int, int, int], seconds: float) -> None:
    """A decodable 25 fps fake of the right size and length, showing the target with a mouth, with audio."""
    info = probe(path)
    assert (info.width, info.height) == OUT_SIZE[kind]
    assert info.fps == pytest.approx(25.0, abs=0.01)
    assert info.duration == pytest.approx(seconds, abs=0.1)
    assert info.has_audio and info.audio_duration == pytest.approx(seconds, abs=0.1)
    frame = read_frames(path, [info.frames // 2])[0].astype(float)
    h, w = frame.shape[:2]
    # The upper half is the target's face colour: the middle panel for MakeItTalk (the right one is black).
    assert np.abs(frame[: h // 3].mean(axis=(0, 1)) - colour).max() < 20
    mouth = frame[int(h * 0.75) - 1: int(h * 0.75) + 2, w // 2 - 2: w // 2 + 3].mean(axis=(0, 1))
    assert np.abs(mouth - MOUTH_RGB).max() < 40  # the generated mouth (MakeItTalk's left panel has none)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_wrapper_makes_a_valid_fake_with_the_driving_audio(tmp_path: Path, kind: str) -> None:
    settings = make_checkout(tmp_path, kind)
    checkout = Path(settings["checkout"])
    before = file_tree(checkout / "examples")
    generator = load_generator(kind, settings)  # through the entry point, as the pipeline does
    assert isinstance(generator, CLASSES[kind]) and generator.check().ready
    # 30 fps targets: TalkLip's wrapper must hand over 25 fps (its stand-in refuses others); LatentSync and
    # IP_LAP convert themselves.
    target, driving = make_inputs(tmp_path, kind, ORANGE, 1.6, "a", fps=TARGET_FPS.get(kind, 25.0))
    params = {"seed": 3}  # what the synthesize stage sends every generator
    if kind == "wav2lip_repo":
        params.update(pads=[0, 5, 0, 0], nosmooth=True)
    out = tmp_path / "fakes" / "fake.mp4"
    result = generator.generate(target, driving, out, params)
    assert result.path == str(out) and result.generator == kind and result.version == "external"
    assert result.frames == probe(out).frames and result.fps == pytest.approx(25.0, abs=0.01)
    assert str(tmp_path) not in json.dumps(result.params)  # provenance holds no machine paths
    assert_fake(out, kind, ORANGE, 1.6)
    if kind == "makeittalk":
        assert result.extra["raw_size"] == [768, 256] and result.extra["raw_fps"] == pytest.approx(62.5, abs=0.1)
        assert file_tree(checkout / "examples") == before  # wavs not resampled in place, no outputs or dump/ left in the checkout
    if kind == "wav2lip_repo":
        assert not any((checkout / "temp").iterdir())  # the script's scratch went to the job's own temp/
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("avlips-")]  # scratch removed


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_concurrent_jobs_in_one_checkout_do_not_collide(tmp_path: Path, kind: str) -> None:
    generator = CLASSES[kind](**make_checkout(tmp_path, kind))
    jobs = [(*make_inputs(tmp_path, kind, colour, seconds, tag), colour, seconds, tmp_path / f"fake_{tag}.mp4")
            for colour, seconds, tag in ((ORANGE, 1.2, "a"), (TEAL, 2.0, "b"))]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda job: generator.generate(job[0], job[1], job[4]), jobs))
    for result, (_, _, colour, seconds, out) in zip(done, jobs):
        assert result.path == str(out)
        assert_fake(out, kind, colour, seconds)  # each job got its own frames and its own length


# What an earlier run of each checkout's own demo leaves where its script writes at fixed paths.
LEFTOVERS = {"wav2lip_repo": ["temp/result.avi"], "latentsync": ["temp/video.mp4"],
             "makeittalk": ["out.mp4", "examples/dump/random_val_fl.pickle"],
             "videoretalking": ["temp/face_a.mp4_stablized.npy"], "ip_lap": ["tempfile_of_ip_lap_out/result.avi"],
             "musetalk": ["results/v15/face_audio.mp4"], "talklip": [], "sadtalker": []}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_checkout_is_never_written_and_its_leftovers_are_never_read(tmp_path: Path, kind: str) -> None:
    settings = make_checkout(tmp_path, kind)
    checkout = Path(settings["checkout"])
    for name in LEFTOVERS[kind]:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes(b"left by an earlier run")
    before = checkout_tree(checkout)
    target, driving = make_inputs(tmp_path, kind, TEAL, 1.2, "a")
    CLASSES[kind](**settings).generate(target, driving, tmp_path / "fake.mp4")
    assert checkout_tree(checkout) == before
    assert_fake(tmp_path / "fake.mp4", kind, TEAL, 1.2)


class _LatentSyncInCheckout(LatentSync):
    def needs_overlay(self) -> bool:
        return False


class _IPLAPInCheckout(IPLAP):
    def needs_overlay(self) -> bool:
        return False


class _VideoRetalkingInCheckout(VideoRetalking):
    def needs_overlay(self) -> bool:
        return False


class _MakeItTalkSharingOutMp4(MakeItTalk):
    def overlay_excluded(self) -> tuple[str, ...]:
        return ()


@pytest.mark.slow
@pytest.mark.parametrize("kind,unshielded,written", [
    ("latentsync", _LatentSyncInCheckout, "temp/video.mp4"),  # whatever --temp_dir says
    ("ip_lap", _IPLAPInCheckout, "tempfile_of_ip_lap_out/result.avi"),
    ("videoretalking", _VideoRetalkingInCheckout, "temp/face_a.mp4_stablized.npy"),
    ("makeittalk", _MakeItTalkSharingOutMp4, "out.mp4"),
])
def test_without_its_private_overlay_the_stand_in_writes_into_the_checkout(tmp_path: Path, kind: str,
                                                                           unshielded, written: str) -> None:
    """The traps are real in the stand-ins: run in the checkout itself, they write where the real scripts do."""
    settings = make_checkout(tmp_path, kind)
    checkout = Path(settings["checkout"])
    if kind == "makeittalk":
        (checkout / "out.mp4").write_bytes(b"left by an earlier run")
    target, driving = make_inputs(tmp_path, kind, TEAL, 1.2, "a")
    unshielded(**settings).generate(target, driving, tmp_path / "fake.mp4")
    assert (checkout / written).is_file() and (checkout / written).read_bytes() != b"left by an earlier run"


def _same_name_targets(root: Path) -> list[Target]:
    """Two different videos that share a file name, in two folders."""
    targets = []
    for folder, colour in (("day1", ORANGE), ("day2", TEAL)):
        video = root / folder / "interview.mp4"
        video.parent.mkdir()
        write_video(video, (np.full((96, 96, 3), colour, np.uint8) for _ in range(25)), 25.0)
        targets.append(Target(f"{folder}_interview", str(video), 25.0, 25, 1.0))
    return targets


@pytest.mark.slow
def test_videoretalking_never_reuses_the_cache_of_another_video_with_the_same_name(tmp_path: Path) -> None:
    settings = make_checkout(tmp_path, "videoretalking")
    _, driving = make_inputs(tmp_path, "videoretalking", ORANGE, 1.2, "a")
    first, second = _same_name_targets(tmp_path)
    for generator, expected in ((VideoRetalking(**settings), TEAL), (_VideoRetalkingInCheckout(**settings), ORANGE)):
        generator.generate(first, driving, tmp_path / "first.mp4")
        generator.generate(second, driving, tmp_path / "second.mp4")
        # In its own checkout the script takes the first video's cached frames for the second.
        assert_fake(tmp_path / "second.mp4", "videoretalking", expected, 1.2)


@pytest.mark.slow
def test_latentsync_gets_the_per_fake_seed_and_musetalk_a_one_task_file(tmp_path: Path) -> None:
    for kind in ("latentsync", "musetalk"):
        settings = {**make_checkout(tmp_path / kind, kind), "keep_scratch": True}
        target, driving = make_inputs(tmp_path / kind, kind, ORANGE, 1.2, "a")
        result = CLASSES[kind](**settings).generate(target, driving, tmp_path / kind / "fake.mp4", {"seed": 4242})
        assert result.params["seed"] == 4242
        scratch = next(p for p in (tmp_path / kind).iterdir() if p.name.startswith(f"avlips-{kind}-"))
        if kind == "latentsync":
            assert "Initial seed: 4242" in (scratch / "stderr.log").read_text()
        else:
            import yaml

            tasks = yaml.safe_load((scratch / "in" / "tasks.yaml").read_text())
            assert list(tasks) == ["task_0"] and Path(tasks["task_0"]["video_path"]).name == "face.mp4"
            assert not (scratch / "musetalk" / "face.pkl").exists()  # the cache beside results/ is removed


def test_overlay_links_the_checkout_and_keeps_private_dirs_fresh(tmp_path: Path) -> None:
    checkout = tmp_path / "repo"
    (checkout / "temp").mkdir(parents=True)
    (checkout / "temp" / "result.avi").write_bytes(b"old")
    (checkout / "models").mkdir()
    (checkout / "inference.py").write_text("print()")
    (checkout / "out.mp4").write_bytes(b"old")
    overlay = make_overlay(checkout, tmp_path / "overlay", ("temp",), ("out.mp4",))
    assert (overlay / "inference.py").resolve() == (checkout / "inference.py").resolve()
    assert (overlay / "models").is_symlink() and not (overlay / "temp").is_symlink()
    assert list((overlay / "temp").iterdir()) == []
    assert not (overlay / "out.mp4").exists()  # the script creates its own


def test_makeittalk_resamples_by_taking_the_frame_on_screen() -> None:
    starts = np.arange(100) / 62.5  # 1.6 s at 62.5 fps
    picks = _resample_indices(starts, 1.6, 25.0)
    assert len(picks) == 40 and picks[:5] == [0, 2, 5, 7, 10] and picks[-1] == 97


MISBEHAVIOUR = ([(kind, "fail") for kind in KINDS]
                + [(kind, mode) for kind in ("wav2lip_repo", "makeittalk", "ip_lap")
                   for mode in ("no_output", "broken", "short")]
                + [("sadtalker", "no_output"), ("talklip", "broken"), ("latentsync", "no_output"),
                   ("latentsync", "broken"), ("musetalk", "broken"), ("musetalk", "short"),
                   ("videoretalking", "no_output"), ("videoretalking", "short"),
                   ("musetalk", "task_error")])  # MuseTalk prints the failed task and exits 0
EXPECTED = {"fail": "exited with code 1", "no_output": "wrote no output", "broken": "is broken", "short": "lasts",
            "task_error": "exited with code 0 but its task failed: Error occurred during processing"}
LAST_STDERR = {"fail": "CUDA out of memory", "no_output": "skipping the output", "broken": "wrote a broken",
               "short": "stand-in: wrote", "task_error": "CUDA out of memory"}


@pytest.mark.slow
@pytest.mark.parametrize("kind,mode", MISBEHAVIOUR)
def test_misbehaving_scripts_become_generator_errors_with_the_stderr_tail(tmp_path: Path, kind: str,
                                                                          mode: str) -> None:
    settings = make_checkout(tmp_path, kind)
    generator = CLASSES[kind](**settings, env={"STANDIN_MODE": mode})
    target, driving = make_inputs(tmp_path, kind, ORANGE, 1.6, "a")
    out = tmp_path / "fake.mp4"
    with pytest.raises(GeneratorError) as caught:
        generator.generate(target, driving, out)
    message = str(caught.value)
    assert EXPECTED[mode] in message and LAST_STDERR[mode] in message
    if mode == "fail":  # only the tail: 32 lines were printed, the first ones are cut
        assert "step 12\n" in message and "step 11\n" not in message  # 20 lines: steps 12..29 + 2
    assert not out.exists() and not list(tmp_path.glob(".fake*"))  # nothing half-written under the name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("avlips-")]


def _alive(pid: int) -> bool:
    """Whether a process runs (zombies, waiting for a reaper, count as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.parametrize("kind", ("sadtalker", *NEW_KINDS))
def test_timeout_kills_the_whole_process_group(tmp_path: Path, kind: str) -> None:
    pidfile = tmp_path / "child.pid"
    settings = {**make_checkout(tmp_path, kind), "timeout_s": 3}
    generator = CLASSES[kind](**settings, env={"STANDIN_MODE": "hang", "STANDIN_PIDFILE": str(pidfile)})
    target, driving = make_inputs(tmp_path, kind, ORANGE, 1.0, "a")
    started = time.monotonic()
    with pytest.raises(GeneratorError, match="timed out after 3 s") as caught:
        generator.generate(target, driving, tmp_path / "fake.mp4")
    assert time.monotonic() - started < 20
    assert "waiting for the GPU" in str(caught.value)
    child = int(pidfile.read_text())  # a process the script started: it must not outlive the job
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


@pytest.mark.parametrize("kind", KINDS)
def test_check_is_ready_with_everything_in_place(tmp_path: Path, kind: str) -> None:
    assert CLASSES[kind](**make_checkout(tmp_path, kind)).check().ready


@pytest.mark.parametrize("kind,change,reason", [
    ("wav2lip_repo", {"checkout": ""}, "setting 'checkout' is not set"),
    ("wav2lip_repo", {"checkout": "/nonexistent/Wav2Lip", "python": "/nonexistent/python"}, "checkout /nonexistent/Wav2Lip not found"),
    ("wav2lip_repo", {"python": "/nonexistent/envs/wav2lip/bin/python"}, "interpreter '/nonexistent/envs/wav2lip/bin/python' not found"),
    ("talklip", {"python": "no-such-python-3.6"}, "interpreter 'no-such-python-3.6' not found"),
    ("sadtalker", {"python": ["no-such-conda", "run", "python"]}, "interpreter"),
    ("wav2lip_repo", {"checkpoint": "checkpoints/wav2lip.pth"}, "checkpoint"),
    ("talklip", {"checkpoint": None}, "setting 'checkpoint' is not set"),
    ("talklip", {"avhubert_root": "/nonexistent/av_hubert"}, "avhubert_root /nonexistent/av_hubert not found"),
    ("sadtalker", {"size": 512}, "SadTalker_V0.0.2_512.safetensors"),
    ("sadtalker", {"checkpoint_dir": "/nonexistent/ckpts"}, "checkpoint_dir /nonexistent/ckpts not found"),
    ("makeittalk", {"ckpt_dir": "/nonexistent/ckpt"}, "ckpt_dir /nonexistent/ckpt not found"),
    ("makeittalk", {"required_files": ["thirdparty/AdaptiveWingLoss/ckpt/WFLW_4HG.pth"]}, "WFLW_4HG.pth not found"),
    ("makeittalk", {"speaker_embeddings": "/nonexistent/emb.pickle"}, "/nonexistent/emb.pickle not found"),
    ("sadtalker", {"extra_args": ["--enhancer", "gfpgan"]}, "GFPGANv1.4.pth not found"),
    ("latentsync", {"unet_config": "configs/unet/stage2.yaml"}, "unet_config"),
    ("latentsync", {"checkpoint": "/nonexistent/latentsync_unet.pt"}, "checkpoint /nonexistent/latentsync_unet.pt"),
    ("musetalk", {"unet_model": "models/musetalk/pytorch_model.bin"}, "unet_model"),
    ("musetalk", {"vae_type": "sd-vae-ft-ema"}, "models/sd-vae-ft-ema not found"),
    ("videoretalking", {"extra_args": ["--up_face", "angry"]}, "30_net_gen.pth"),
    ("ip_lap", {"renderer_checkpoint": "/nonexistent/renderer.pth"}, "renderer_checkpoint /nonexistent/renderer.pth"),
])
def test_check_names_the_first_missing_thing(tmp_path: Path, kind: str, change: dict, reason: str) -> None:
    generator = CLASSES[kind](**{**make_checkout(tmp_path, kind), **change})
    state = generator.check()
    assert not state.ready and reason in state.reason and kind in state.reason
    target, driving = make_inputs(tmp_path, kind, ORANGE, 0.5, "a")
    with pytest.raises(GeneratorNotReady, match=reason.split()[0]):
        generator.generate(target, driving, tmp_path / "fake.mp4")


# Scripts, checkpoints and the other files each script reads from its checkout at run time.
NEEDED = [("wav2lip_repo", "inference.py"), ("wav2lip_repo", "face_detection/detection/sfd/s3fd.pth"),
          ("talklip", "inf_demo.py"), ("talklip", "config.yaml"), ("talklip", "task_state.pt"),
          ("talklip", "face_detection/detection/sfd/s3fd.pth"),
          ("sadtalker", "checkpoints/mapping_00109-model.pth.tar"),
          ("sadtalker", "gfpgan/weights/detection_Resnet50_Final.pth"),
          ("sadtalker", "gfpgan/weights/alignment_WFLW_4HG.pth"),
          ("makeittalk", "examples/ckpt/ckpt_autovc.pth"), ("makeittalk", "examples/dump/emb.pickle"),
          ("makeittalk", "src/dataset/utils/MEAN_STD_AUTOVC_RETRAIN_MEL_AU.txt"),
          ("latentsync", "scripts/inference.py"), ("latentsync", "checkpoints/latentsync_unet.pt"),
          ("latentsync", "checkpoints/whisper/tiny.pt"), ("latentsync", "configs/scheduler_config.json"),
          ("latentsync", "latentsync/utils/mask.png"),
          ("latentsync", "checkpoints/auxiliary/models/buffalo_l/2d106det.onnx"),
          ("musetalk", "scripts/inference.py"), ("musetalk", "models/musetalkV15/musetalk.json"),
          ("musetalk", "models/dwpose/dw-ll_ucoco_384.pth"), ("musetalk", "models/face-parse-bisent/79999_iter.pth"),
          ("videoretalking", "checkpoints/GFPGANv1.3.pth"), ("videoretalking", "checkpoints/expression.mat"),
          ("videoretalking", "checkpoints/LNet.pth"),
          ("ip_lap", "test/checkpoints/landmarkgenerator_checkpoint.pth")]


@pytest.mark.parametrize("kind,missing", NEEDED)
def test_check_reports_a_deleted_script_or_needed_file_and_no_fake_is_attempted(tmp_path: Path, kind: str,
                                                                                missing: str) -> None:
    settings = make_checkout(tmp_path, kind)
    (Path(settings["checkout"]) / missing).unlink()
    generator = CLASSES[kind](**settings)
    state = generator.check()
    assert not state.ready and kind in state.reason and missing in state.reason
    target, driving = make_inputs(tmp_path, kind, ORANGE, 0.5, "a")
    with pytest.raises(GeneratorNotReady, match=Path(missing).name):
        generator.generate(target, driving, tmp_path / "fake.mp4")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("avlips-")]  # not even scratch was made


@pytest.mark.slow
@pytest.mark.parametrize("kind,missing", [(kind, missing) for kind, missing in NEEDED
                                          if missing != SCRIPTS[kind][1]])
def test_each_needed_file_is_one_the_stand_in_script_cannot_run_without(tmp_path: Path, kind: str,
                                                                        missing: str) -> None:
    """What check() demands is what the script reads: with one file gone, the script itself fails."""
    settings = make_checkout(tmp_path, kind)
    (Path(settings["checkout"]) / missing).unlink()

    class Unchecked(CLASSES[kind]):
        def check(self):
            return Readiness(True)

    target, driving = make_inputs(tmp_path, kind, ORANGE, 0.8, "a")
    with pytest.raises(GeneratorError, match="exited with code 1|task failed") as caught:
        Unchecked(**settings).generate(target, driving, tmp_path / "fake.mp4")
    assert Path(missing).name in str(caught.value)


def test_latentsync_checks_the_whisper_model_its_unet_config_asks_for(tmp_path: Path) -> None:
    settings = make_checkout(tmp_path, "latentsync")
    config = Path(settings["checkout"]) / "configs" / "unet" / "stage2_512.yaml"
    config.write_text(LATENTSYNC_CONFIG.replace("384", "768"))
    state = LatentSync(**settings).check()
    assert not state.ready and "checkpoints/whisper/small.pt not found" in state.reason
    config.write_text(LATENTSYNC_CONFIG.replace("384", "512"))
    state = LatentSync(**settings).check()
    assert not state.ready and "cross_attention_dim is 512" in state.reason and str(config) in state.reason


def test_talklip_names_the_task_state_path_its_script_loads(tmp_path: Path) -> None:
    """The published inf_demo.py loads task_state.pt from its authors' absolute path."""
    settings = make_checkout(tmp_path, "talklip")
    script = Path(settings["checkout"]) / "inf_demo.py"
    script.write_text(script.read_text() + "\n# task_pretrain.load_state_dict(torch.load('/home/wjd/Talklip/task_state.pt'))\n")
    state = TalkLip(**settings).check()
    assert not state.ready and "/home/wjd/Talklip/task_state.pt not found" in state.reason
    assert "shipped at the checkout's root" in state.reason


def test_interpreter_may_be_relative_to_the_checkout_or_an_argv_prefix(tmp_path: Path) -> None:
    settings = make_checkout(tmp_path, "wav2lip_repo")
    venv_python = Path(settings["checkout"]) / "env" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    assert Wav2LipRepo(**{**settings, "python": "env/bin/python"}).check().ready
    assert Wav2LipRepo(**{**settings, "python": [sys.executable, "-X", "utf8"]}).interpreter()[1:] == ["-X", "utf8"]


def test_options_become_the_scripts_flags_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    generator = Wav2LipRepo(**make_checkout(tmp_path, "wav2lip_repo"))
    args = generator.option_args({"pads": [0, 20, 0, 0], "nosmooth": True, "rotate": False, "fps": 25, "seed": 7})
    assert args == ["--fps", "25", "--nosmooth", "--pads", "0", "20", "0", "0"]
    target, driving = make_inputs(tmp_path, "wav2lip_repo", ORANGE, 0.5, "a")
    with pytest.raises(GeneratorError, match="unknown option 'bogus'"):
        generator.generate(target, driving, tmp_path / "fake.mp4", {"bogus": 1})


def test_stderr_tail_keeps_the_last_lines_and_falls_back_to_stdout(tmp_path: Path) -> None:
    err, out = tmp_path / "err.log", tmp_path / "out.log"
    err.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(err).splitlines() == [f"line {i}" for i in range(30, 50)]
    err.write_text("")
    out.write_text("only stdout\n")
    assert "only stdout" in tail(err, out)


def test_every_wrapper_is_an_external_checkout_generator() -> None:
    for kind, cls in CLASSES.items():
        assert issubclass(cls, ExternalCheckoutGenerator) and cls.version == "external"
        assert cls.input_kind == (IMAGE if kind == "makeittalk" else VIDEO)


def _phone_clip(root: Path) -> Path:
    """An odd-sized clip stored sideways with rotation metadata (shown 61 wide, 97 high), as phones record."""
    import subprocess

    stored, shown = root / "stored.mp4", root / "phone.mp4"
    for args in (["-f", "lavfi", "-i", "testsrc=size=97x61:rate=25:duration=1", "-pix_fmt", "yuv444p",
                  "-c:v", "libx264", str(stored)],
                 ["-display_rotation", "90", "-i", str(stored), "-c", "copy", str(shown)]):
        subprocess.run([pinned_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)
    return shown


def test_a_rotated_odd_sized_target_is_handed_over_upright_and_even(tmp_path: Path) -> None:
    phone = _phone_clip(tmp_path)
    shown = read_frames(phone, [5])[0][..., ::-1].astype(float)  # as displayed, BGR
    assert probe(phone).rotation and shown.shape == (97, 61, 3)
    handed = video_for_script(phone, tmp_path / "handed.mp4")
    # Read as the checkouts' old OpenCV reads: rotation metadata ignored.
    capture = cv2.VideoCapture(str(handed))
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    for _ in range(6):
        ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape == (98, 62, 3)  # upright, one edge row and column added
    grey = cv2.cvtColor(frame[:97, :61], cv2.COLOR_BGR2GRAY).astype(float)  # luma: 4:2:0 blurs colour edges
    expected = cv2.cvtColor(shown.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(float)
    assert np.abs(grey - expected).mean() < 4 < np.abs(grey - expected[::-1, ::-1]).mean()
    plain = tmp_path / "plain.mp4"
    write_video(plain, (np.full((48, 64, 3), 90, np.uint8) for _ in range(5)), 25.0)
    assert video_for_script(plain, tmp_path / "unused.mp4") == plain  # nothing to fix: no re-encode


@pytest.mark.slow
def test_wav2lip_repo_makes_a_fake_of_a_rotated_odd_sized_phone_clip(tmp_path: Path) -> None:
    settings = make_checkout(tmp_path, "wav2lip_repo")
    phone = _phone_clip(tmp_path)
    target = Target("phone", str(phone), 25.0, 25, 1.0)
    _, driving = make_inputs(tmp_path, "wav2lip_repo", ORANGE, 1.6, "a")
    out = tmp_path / "fake.mp4"
    Wav2LipRepo(**settings).generate(target, driving, out)  # H.264 4:2:0 refuses a 61x97 picture
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (62, 98, 0)
    assert info.duration == pytest.approx(1.6, abs=0.1)


def test_the_scripts_ffmpeg_is_avlips_pinned_one_whatever_path_holds(tmp_path: Path, monkeypatch) -> None:
    """The research scripts call `ffmpeg` by name (Wav2Lip's audio conversion and final encode): the
    wrapper puts the binary avlips encodes with first on their PATH, ahead of an old one."""
    old = tmp_path / "old-bin" / "ffmpeg"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'old ffmpeg' >&2\nexit 1\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    settings = make_checkout(tmp_path, "wav2lip_repo")
    target, driving = make_inputs(tmp_path, "wav2lip_repo", ORANGE, 1.2, "a")
    out = tmp_path / "fake.mp4"
    Wav2LipRepo(**settings).generate(target, driving, out)  # the stand-in fails on an ffmpeg that fails
    assert probe(out).duration == pytest.approx(1.2, abs=0.1)


class _FinishFailsHalfway(Wav2LipRepo):
    """Its muxing step writes part of the file, then fails (disk full, ffmpeg killed)."""

    def finish(self, job, raw, info, out_path):
        Path(out_path).write_bytes(b"\x00\x00\x00\x18ftypmp42 half a video")
        raise MediaError(str(out_path), "ffmpeg failed: No space left on device")


def test_a_finish_that_fails_half_way_leaves_no_file_behind(tmp_path: Path) -> None:
    settings = make_checkout(tmp_path, "wav2lip_repo")
    target, driving = make_inputs(tmp_path, "wav2lip_repo", ORANGE, 1.2, "a")
    out = tmp_path / "fakes" / "fake.mp4"
    with pytest.raises(GeneratorError, match="No space left on device"):
        _FinishFailsHalfway(**settings).generate(target, driving, out)
    assert list(out.parent.iterdir()) == []  # neither the fake nor a partial file

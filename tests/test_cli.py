"""The `avlips` command reports bad input in one line naming it, with exit status 1, not a traceback."""

from __future__ import annotations

from avlips.cli import main


def test_render_of_a_missing_shard_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope-000000.tar"
    status = main(["render", "--shards", str(missing), "--key", "k", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert status == 1 and str(missing) in err and "Traceback" not in err


def test_detect_with_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, make_video):
    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    status = main(["detect", "--checkpoint", str(bad), str(make_video())])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"{bad}: not a readable PyTorch checkpoint" in err and len(err.splitlines()) == 1

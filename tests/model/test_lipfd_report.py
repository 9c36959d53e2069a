"""The robustness report: grouping, tables, plots."""
from __future__ import annotations

import json

import numpy as np
import pytest

from avlips.model.metrics import roc_auc
from avlips.model.report import ScoredWindow, build_detectors_report, build_report, markdown, write_report


def _rows():
    rng = np.random.default_rng(1)
    rows = []
    for clip in range(12):
        label = int(clip >= 6)
        generator = ("" if not label else ("audio_swap" if clip < 9 else "mouth_rewrite"))
        for kind, level in [("none", 0)] + [(k, lv) for k in ("blur", "noise") for lv in (1, 2, 3)]:
            # Damage pulls scores towards 0.5 as the level grows: AUC should fall with the level.
            spread = 0.4 / (1 + level * (2 if kind == "noise" else 0.5))
            for window in range(4):
                score = 0.5 + (spread if label else -spread) + rng.normal(0, 0.08)
                rows.append(ScoredWindow(f"c{clip}_w{window}_{kind}{level}", f"c{clip}", label, generator, kind,
                                         level, float(np.clip(score, 0, 1))))
    return rows


def test_report_groups(tmp_path):
    rows = _rows()
    report = build_report(rows, bootstrap_rounds=50)
    clean = [r for r in rows if r.perturbation == "none"]
    assert report["clean"]["window"]["auc"] == pytest.approx(roc_auc([r.label for r in clean], [r.score for r in clean]))
    assert report["clean"]["video"]["n"] == 12
    assert set(report["per_generator"]) == {"audio_swap", "mouth_rewrite"}
    # A generator's AUC uses its fakes against all reals.
    assert report["per_generator"]["audio_swap"]["window"]["n"] == 24 + 12
    assert list(report["perturbations"]["noise"]) == ["1", "2", "3"]
    noise = [report["perturbations"]["noise"][lv]["window"]["auc"] for lv in ("1", "2", "3")]
    assert noise[0] >= noise[2]
    text = markdown(report)
    assert "| noise |" in text and "| audio_swap |" in text and "L3" in text
    paths = write_report(report, str(tmp_path))
    assert json.loads(open(paths["json"]).read())["windows"] == len(rows)
    assert open(paths["csv"]).read().splitlines()[0] == "type,level,auc,accuracy,detector"
    for name in ("auc_by_level.png", "auc_by_generator.png"):
        assert open(paths[name], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_abstained_windows_are_counted_and_left_out_of_the_metrics():
    rows = _rows()
    # Abstain on every window 0, and on every window of clip c7 (a fake): that video gets no score.
    abstaining = [ScoredWindow(r.key, r.clip, r.label, r.generator, r.perturbation, r.level, None, "no speech (-70 dBFS)")
                  if (r.key.split("_")[1] == "w0" or r.clip == "c7") else r for r in rows]
    report = build_report(abstaining, bootstrap_rounds=0)
    scored = [r for r in abstaining if r.score is not None]
    assert report["windows"] == len(scored)
    clean = [r for r in scored if r.perturbation == "none"]
    assert report["clean"]["window"]["n"] == len(clean)
    assert report["clean"]["window"]["auc"] == pytest.approx(roc_auc([r.label for r in clean], [r.score for r in clean]))
    assert report["clean"]["video"]["n"] == 11  # c7 has no scored window
    counts = report["abstentions"]
    assert counts["windows"] == len(rows) - len(scored)
    assert counts["clean"]["real"] == 6 and counts["clean"]["per_generator"] == {"audio_swap": 3 + 3, "mouth_rewrite": 3}
    assert counts["clean"]["videos_without_score"] == {"audio_swap": 1}
    assert counts["perturbations"]["blur"] == {"1": 15, "2": 15, "3": 15}
    assert counts["reasons"] == {"no speech": counts["windows"]}
    assert counts["scored_on_fewer_offsets"] == 0
    cut = [ScoredWindow(r.key, r.clip, r.label, r.generator, r.perturbation, r.level, r.score, "",
                        {"offsets_available": 25 if r.key.split("_")[1] == "w3" else 31, "offsets_wanted": 31})
           for r in abstaining]
    assert build_report(cut, bootstrap_rounds=0)["abstentions"]["scored_on_fewer_offsets"] == sum(
        1 for r in cut if r.score is not None and r.key.split("_")[1] == "w3")
    multi = build_detectors_report({"lipfd": rows, "sync": abstaining}, bootstrap_rounds=0)
    assert multi["primary_detector"] == "lipfd" and multi["clean"] == multi["detectors"]["lipfd"]["clean"]
    text = markdown(multi)
    assert "| audio_swap | sync |" in text and "| blur | lipfd |" in text and "## Abstentions" in text
    assert "left out of the video metrics" in text

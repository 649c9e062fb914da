"""dfs.evaluate and ``dfs eval``: pairs of different held-out people, the reference rows' known values, the JSON
and markdown outputs, and the command's errors."""
from __future__ import annotations

import json

import pytest

from dfs.evaluate import evaluate, sample_pairs
from shared_data import shared_faces  # noqa: E402


def test_sample_pairs_rules():
    photos = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"]}
    pairs = sample_pairs(photos, 12, seed=3)
    owner = {p: k for k, v in photos.items() for p in v}
    assert len(set(pairs)) == 12
    assert all(owner[s] != owner[t] for s, t in pairs)                 # different people
    assert all(owner[s] != "b" for s, _ in pairs)                      # b has no second photo for the gallery
    assert pairs == sample_pairs(photos, 12, seed=3) != sample_pairs(photos, 12, seed=4)
    possible = 3 * 3 + 2 * 4                                           # sources a (x b, c photos) and c (x a, b)
    assert len(sample_pairs(photos, possible, seed=0)) == possible
    with pytest.raises(ValueError, match="only 17 distinct pairs"):
        sample_pairs(photos, possible + 1, seed=0)
    with pytest.raises(ValueError, match=">= 2 held-out people"):
        sample_pairs({"a": ["a1"], "b": ["b1"]}, 1, seed=0)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    data = shared_faces()
    out = tmp_path_factory.mktemp("eval")
    return evaluate("classical", data=data, pairs=3, seed=0, out=out, max_per_identity=3, self_pairs=1,
                    progress=False), data


def test_eval_pairs_come_from_held_out_people(report):
    from dfs.data.faces import lfw_dataset
    rep, data = report
    train, held = lfw_dataset(data).split(0.2, seed=0)
    s = rep.summary
    assert s["gallery_people"] == held.identities
    person = {str(r.path): r.identity for r in held.records}
    for p in s["pairs"]:
        assert person[p["source"]] != person[p["target"]]
        assert person[p["source"]] not in train.identities and person[p["target"]] not in train.identities
    assert s["n_pairs"] == 3 and s["gallery_photos"] <= 3 * len(held.identities)


def test_eval_reference_rows_have_their_known_values(report):
    rows = report[0].summary["rows"]
    assert list(rows) == ["classical", "source pasted", "target resampled", "target unchanged"]
    unchanged = rows["target unchanged"]
    # the target's own 256-px crop pasted back: nearly the photo (what resampling alone costs)
    resampled = rows["target resampled"]
    assert resampled["id_cos_target"] > 0.98 and resampled["pose_error"] < 2.0
    assert resampled["id_cos_source"] == pytest.approx(unchanged["id_cos_source"], abs=0.02)
    assert unchanged["pose_error"] == pytest.approx(0, abs=1e-9)
    assert unchanged["expression_error"] == pytest.approx(0, abs=1e-9)
    assert all(unchanged[f"landmark_error_{g}"] == pytest.approx(0, abs=1e-9)
               for g in ("jaw", "brows", "nose", "eyes", "mouth"))
    assert rows["source pasted"]["landmark_error_jaw"] > resampled["landmark_error_jaw"] > 0
    assert unchanged["id_cos_target"] == pytest.approx(1, abs=1e-6)
    assert unchanged["seconds_per_swap"] is None and unchanged["psnr_self"] is None
    c = rows["classical"]
    assert c["psnr_self"] > 30 and 0 < c["ssim_self"] <= 1 and c["seconds_per_swap"] > 0
    for r in rows.values():
        assert 0 <= r["id_top1"] <= r["id_top5"] <= 1
        assert r["id_feature_fd"] is not None and r["id_feature_fd"] >= 0
    assert rows["source pasted"]["id_cos_source"] > unchanged["id_cos_source"]


def test_eval_writes_json_and_a_labelled_markdown_table(report):
    rep, _ = report
    js, md = rep.files
    assert js.suffix == ".json" and md.suffix == ".md"
    loaded = json.loads(js.read_text())
    assert loaded["rows"]["classical"]["id_cos_source"] == pytest.approx(rep.summary["rows"]["classical"]
                                                                         ["id_cos_source"])
    assert len(loaded["per_pair"]["classical"]) == 3
    text = md.read_text()
    assert "| classical |" in text and "| target unchanged |" in text and "| source pasted |" in text
    assert "ID-feature FD" in text and "not FID" in text
    if not loaded["inception"]["available"]:
        assert "| FID" not in text and "FID/KID not computed" in text
    assert len(rep.examples) == 3 and rep.examples[0]["classical"].shape == rep.examples[0]["target"].shape


def test_eval_command_errors(tmp_path, capsys):
    from dfs.cli import main
    assert main(["eval", "--data", str(tmp_path / "missing"), "--pairs", "2", "--no-progress"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path), "--pairs", "0", "--no-progress"]) == 2
    assert "pairs must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--method", "no-such-method"])

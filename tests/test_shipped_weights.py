"""The weights that ship in dfs/weights/: they load, match their presets, say what made them, and swap photos of the
embedded data end to end; the export keeps statistics in float32."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfs.paths import repo_root
from dfs.swap.config import load_config
from dfs.swap.shipped import SHIPPED, WEIGHTS_DIR, read_time_log, shipped_checkpoint

PHOTOS = repo_root() / "data" / "lfw_home" / "lfw_funneled"


def test_shipped_diffusion_weights_load_match_the_preset_and_say_what_made_them():
    from dfs.swap import diffusion as D
    model, cfg, path = D.load_swap_model(shipped_checkpoint("diffusion"))
    assert path == WEIGHTS_DIR / "swap-quick"
    assert cfg.model_dict() == load_config("quick").model_dict()
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["command"] == "dfs train-swap --config quick" and prov["step"] == load_config("quick").steps
    assert prov["training_time"]["wall_seconds"] > 0 and "final_losses" in prov
    # parameters travel as fp16, the identity standardisation as fp32 (and it is not the identity map)
    from safetensors import safe_open

    from dfs.train import weight_files
    dtypes = {}
    for file in weight_files(path, "ema"):
        assert file.stat().st_size < 8 * 2 ** 20                 # no file in the repository over 8 MiB
        with safe_open(str(file), "pt") as f:
            dtypes.update({k: f.get_slice(k).get_dtype() for k in f.keys()})
    assert dtypes["id_std"] == "F32" and dtypes["id_mean"] == "F32"
    assert {v for k, v in dtypes.items() if k.startswith("unet.")} == {"F16"}
    assert not torch.allclose(model.id_std, torch.ones_like(model.id_std))


def test_shipped_faceshifter_weights_load_and_match_the_preset():
    from dfs.swap import faceshifter as FS
    aei, hear, cfg, path = FS.load_faceshifter(shipped_checkpoint("faceshifter"))
    assert hear is not None and path == WEIGHTS_DIR / "faceshifter-quick" / "aei"
    assert cfg.model_dict() == FS.load_config("quick").model_dict()
    for stage in ("aei", "hear"):
        prov = json.loads((path.parent / stage / "provenance.json").read_text())
        assert prov["command"] == "dfs train-swap --model faceshifter --config quick"


@pytest.mark.parametrize("method", sorted(SHIPPED))
def test_shipped_models_swap_two_photos_end_to_end(method, tmp_path):
    from dfs.cli import main
    from dfs.swap.pipeline import read_png_metadata
    out = tmp_path / "out.png"
    extra = ["--steps", "3"] if method == "diffusion" else []
    rc = main(["swap", "--method", method, "--source", str(PHOTOS / "Tom_Hanks" / "Tom_Hanks_0001.jpg"),
               "--target", str(PHOTOS / "Laura_Bush" / "Laura_Bush_0001.jpg"), "--out", str(out), *extra])
    assert rc == 0
    meta = read_png_metadata(out)
    assert meta["dfs:method"] == method and SHIPPED[method] in meta["dfs:checkpoint"]
    from PIL import Image
    result = np.asarray(Image.open(out))
    target = np.asarray(Image.open(PHOTOS / "Laura_Bush" / "Laura_Bush_0001.jpg"))
    assert result.shape == target.shape
    changed = np.abs(result.astype(int) - target.astype(int)).max(-1) > 8
    assert 0.02 < changed.mean() < 0.5       # the face changed, the rest of the photo did not


def test_a_missing_shipped_folder_says_how_to_get_it(monkeypatch, tmp_path):
    import dfs.swap.shipped as S
    monkeypatch.setattr(S, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="dfs train-swap --config quick"):
        S.shipped_checkpoint("diffusion")
    with pytest.raises(ValueError, match="no shipped weights"):
        S.shipped_checkpoint("classical")


def test_time_log_is_read_from_usr_bin_time(tmp_path):
    log = tmp_path / "log"
    log.write_text("\tUser time (seconds): 100.50\n\tSystem time (seconds): 2.25\n"
                   "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5\n"
                   "\tMaximum resident set size (kbytes): 2048000\n")
    t = read_time_log(log)
    assert t["wall_seconds"] == pytest.approx(3723.5) and t["cpu_seconds"] == pytest.approx(102.75)
    assert t["peak_memory_mib"] == pytest.approx(2000.0)
    (tmp_path / "empty").write_text("nothing here")
    with pytest.raises(ValueError, match="no /usr/bin/time -v report"):
        read_time_log(tmp_path / "empty")


def test_export_casts_parameters_and_keeps_statistics(tmp_path):
    from safetensors.torch import load_file, save_file

    from dfs.train import export_weights
    ck = tmp_path / "step_0000003"
    ck.mkdir()
    save_file({"w": torch.randn(4, 4), "id_mean": torch.randn(4) * 1e-4, "bn.running_var": torch.rand(4)},
              str(ck / "ema.safetensors"))
    (ck / "state.json").write_text(json.dumps({"step": 3, "history": [{"loss": 1.0}], "config": {"extra": {}}}))
    out = export_weights(ck, tmp_path / "shipped", {"command": "x"})
    t = load_file(str(out / "ema.safetensors"))
    assert t["w"].dtype == torch.float16 and t["id_mean"].dtype == torch.float32
    # a small file limit splits the weights into shards that load back as one model
    sharded = export_weights(ck, tmp_path / "sharded", {}, max_file_mib=40 / 2 ** 20)
    from dfs.train import load_weights, weight_files
    files = weight_files(sharded, "ema")
    assert len(files) == 2 and files[0].name == "ema-00001-of-00002.safetensors"   # 16 + 16 bytes, then 32
    module = torch.nn.Module()
    module.register_parameter("w", torch.nn.Parameter(torch.zeros(4, 4)))
    module.register_buffer("id_mean", torch.zeros(4))
    module.bn = torch.nn.Module()
    module.bn.register_buffer("running_var", torch.zeros(4))
    load_weights(module, sharded)
    torch.testing.assert_close(module.w.data, t["w"].float())
    assert t["bn.running_var"].dtype == torch.float32
    assert json.loads((out / "provenance.json").read_text()) == {"command": "x"}
    assert not (out / "optimizer.pt").exists() and json.loads((out / "state.json").read_text())["step"] == 3
    with pytest.raises(FileNotFoundError, match="not a dfs checkpoint"):
        export_weights(tmp_path, tmp_path / "x")


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    """No face, a non-image, a missing checkpoint, the other model's checkpoint: exit 2, one line, no file."""
    from PIL import Image

    from dfs.cli import main
    face = str(PHOTOS / "Tom_Hanks" / "Tom_Hanks_0001.jpg")
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(blank)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    cases = [(["--method", "classical", "--source", str(blank), "--target", face], "no usable face in the source"),
             (["--method", "classical", "--source", face, "--target", str(notes)], "notes.jpg"),
             (["--method", "diffusion", "--source", face, "--target", face, "--checkpoint", str(tmp_path / "none")],
              "no face-swap checkpoint"),
             (["--method", "diffusion", "--source", face, "--target", face, "--checkpoint",
               str(shipped_checkpoint("faceshifter"))], "not of a face-swap diffusion model"),
             (["--method", "faceshifter", "--source", face, "--target", face, "--checkpoint",
               str(shipped_checkpoint("diffusion"))], "diffusion-swap checkpoint")]
    for k, (args, msg) in enumerate(cases):
        out = tmp_path / f"out{k}.png"
        assert main(["swap", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1 and err.startswith("dfs swap: "), err
        assert not out.exists()


def test_cli_two_faces_say_which_is_used(tmp_path, capsys):
    from pathlib import Path

    import insightface

    from dfs.cli import main
    group = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    face = str(PHOTOS / "Tom_Hanks" / "Tom_Hanks_0001.jpg")
    assert main(["swap", "--method", "classical", "--source", face, "--target", str(group),
                 "--out", str(tmp_path / "o.png"), "--target-face", "1"]) == 0
    err = capsys.readouterr().err
    assert "faces in the target photo" in err and "using face 1" in err and (tmp_path / "o.png").is_file()

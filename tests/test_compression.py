"""Channel pruning of the shipped swap models (dfs.compression) and wandb logging from the one trainer."""
from __future__ import annotations

import importlib.util
import json
import struct
import sys

import pytest
import torch

from shared_data import shared_lfw_photos

from dfs import compression as C

needs_torch_pruning = pytest.mark.skipif(importlib.util.find_spec("torch_pruning") is None,
                                         reason="Torch-Pruning is not installed (pip install 'dfs[compress]')")


def _output(kind, model, inputs):
    net = C.pruned_network(kind, model)
    with torch.no_grad():
        return net(**inputs).sample if kind == "diffusion" else net(*inputs)[0]


@pytest.fixture(scope="module")
def pruned():
    """Each shipped model pruned at ratio 0.5 (once for the module), with its unpruned counts."""
    out = {}
    for kind in C.MODELS:
        model, extra = C.load_prunable(kind)
        before = C.count(kind, model)
        C.prune(kind, model, 0.5)
        out[kind] = (model.eval(), extra, before)
    return out


@needs_torch_pruning
@pytest.mark.parametrize("kind", C.MODELS)
def test_a_pruned_model_runs_and_has_the_counted_parameters(pruned, kind):
    model, _, before = pruned[kind]
    after = C.count(kind, model)
    assert after["params"] == sum(p.numel() for p in model.parameters())
    # half the channels of every prunable layer: between a quarter (both sides of a weight halved) and two thirds
    # of the parameters stay (kept layers: the identity tokens, the output convolutions, q/k/v, z_id's input)
    assert 0.2 * before["params"] < after["params"] < 0.67 * before["params"]
    assert after["macs"] < 0.5 * before["macs"]
    inputs = C.example_inputs(kind, model)
    y = _output(kind, model, inputs)
    S = model.config.image_size
    assert y.shape == (2, 3, S, S) and torch.isfinite(y).all()
    net = C.pruned_network(kind, model)
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0, name
        if hasattr(m, "heads") and hasattr(m, "to_q"):         # diffusers attention: heads kept, width divisible
            assert m.to_q.out_features % m.heads == 0 and m.to_k.out_features == m.to_q.out_features, name
    if kind == "faceshifter":   # AAD: γ and β (the two halves of att / id) follow h's width; the mask stays 1 channel
        for blk in net.generator.blocks:
            c = blk.conv1.in_channels
            assert blk.aad1.att.out_channels == blk.aad1.id.out_features == 2 * c and blk.aad1.mask.out_channels == 1
    else:
        assert net.conv_in.in_channels == net.config.in_channels and net.conv_out.out_channels == 3


@needs_torch_pruning
def test_the_pruned_fraction_grows_with_the_ratio():
    sizes = []
    for ratio in (0.0, 0.25, 0.75):
        model, _ = C.load_prunable("faceshifter")
        sizes.append(C.count("faceshifter", C.prune("faceshifter", model, ratio))["params"])
    assert sizes[0] > sizes[1] > sizes[2]


@needs_torch_pruning
@pytest.mark.parametrize("kind", C.MODELS)
def test_a_pruned_checkpoint_round_trips_without_torch_pruning(pruned, kind, tmp_path, monkeypatch):
    model, _, _ = pruned[kind]
    src = C.shipped_checkpoint(kind)
    out = C.save_pruned(kind, model, src, tmp_path / "pruned", 0.5)
    monkeypatch.setitem(sys.modules, "torch_pruning", None)     # loading must not need the pruning library
    if kind == "diffusion":
        method = C.DiffusionSwap(out, device="cpu")                # what `dfs swap --checkpoint` builds
        loaded = method.model
    else:
        method = C.FaceShifterSwap(out, device="cpu")
        loaded = method.aei
        assert method.use_hear                                       # HEAR-Net came along
    state = json.loads(((out / "aei") if kind == "faceshifter" else out).joinpath("state.json").read_text())
    assert sum(p.numel() for p in loaded.parameters()) == state["config"]["extra"]["pruning"]["params"]
    inputs = C.example_inputs(kind, model)
    assert torch.allclose(_output(kind, loaded, inputs), _output(kind, model, inputs), atol=1e-6)


@needs_torch_pruning
def test_dfs_swap_and_prune_cli_with_a_pruned_diffusion_checkpoint(tmp_path, capsys):
    from dfs.cli import main

    out = tmp_path / "swap-50"
    assert main(["prune", "--checkpoint", str(C.shipped_checkpoint("diffusion")), "--ratio", "0.5", "--out",
                 str(out), "--no-progress"]) == 0
    assert "parameters" in capsys.readouterr().out
    photos = shared_lfw_photos()
    people = sorted(p.name for p in photos.iterdir() if p.is_dir())[:2]
    src, tgt = (next(iter(sorted((photos / p).glob("*.jpg")))) for p in people)
    rc = main(["swap", "--source", str(src), "--target", str(tgt), "--out", str(tmp_path / "s.png"),
               "--checkpoint", str(out), "--steps", "2"])
    assert rc == 0 and (tmp_path / "s.png").is_file()


@pytest.fixture(scope="module")
def faces64():
    """Six aligned 64-px training faces of two people (the shipped models' crop size)."""
    from dfs.swap.data import SwapData
    from dfs.swap.pipeline import SourcePasted, SwapPipeline

    photos = shared_lfw_photos()
    people = sorted(p.name for p in photos.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 3)[:2]
    pipe = SwapPipeline(SourcePasted(), crop_size=64)
    aligned = [pipe.align(f) for p in people for f in sorted((photos / p).glob("*.jpg"))[:3]]
    return SwapData.from_aligned(aligned, [p for p in people for _ in range(3)], batch_size=2, source_pixels=True)


@needs_torch_pruning
@pytest.mark.parametrize("kind", C.MODELS)
def test_the_fine_tune_trains_the_pruned_model_with_its_own_loss(kind, faces64):
    model, _ = C.load_prunable(kind)
    model.config.batch_size = 2
    C.prune(kind, model, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, trainer = C.fine_tune(kind, model, 2, faces64)
    assert trainer.step == 2 and trainer.history
    assert ("loss_g" if kind == "faceshifter" else "mse") in trainer.history[-1]      # the model's own loss terms
    after = tuned.state_dict()
    assert {k: tuple(v.shape) for k, v in after.items()} == {k: tuple(v.shape) for k, v in before.items()}
    assert any(not torch.equal(after[k], before[k]) for k in before if after[k].is_floating_point())


def test_bad_pruning_inputs_give_clear_errors_and_write_nothing(tmp_path, capsys, monkeypatch):
    from dfs.cli import main
    from dfs.train import TrainConfig, Trainer

    ship = str(C.shipped_checkpoint("diffusion"))
    out = tmp_path / "out"
    for ratio, want in (("1", "in [0, 1); got 1.0"), ("-0.1", "in [0, 1); got -0.1")):
        assert main(["prune", "--checkpoint", ship, "--ratio", ratio, "--out", str(out)]) == 2
        assert want in capsys.readouterr().err
    assert main(["prune", "--checkpoint", str(tmp_path / "missing"), "--ratio", "0.5", "--out", str(out)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    # a dfs checkpoint of another model (a 2-D toy's)
    toy = Trainer(torch.nn.Linear(2, 2), lambda m, b, s: m(b).pow(2).mean(), lambda s, g: torch.randn(4, 2),
                  TrainConfig(steps=1, progress=False, checkpoint_dir=str(tmp_path / "toy")))
    toy.fit()
    assert main(["prune", "--checkpoint", str(tmp_path / "toy"), "--ratio", "0.5", "--out", str(out)]) == 2
    assert "not of a face-swap model" in capsys.readouterr().err
    assert main(["prune", "--checkpoint", str(tmp_path), "--ratio", "0.5", "--out", str(out)]) == 2
    assert "is not a dfs checkpoint" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch_pruning", None)        # Torch-Pruning not installed
    assert main(["prune", "--checkpoint", ship, "--ratio", "0.5", "--out", str(out)]) == 2
    assert "pip install 'dfs[compress]'" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# wandb


def _wandb_records(path):
    """The protobuf records of a run's .wandb file: LevelDB-log framing (a 7-byte header ":W&B", 0xBEE1, version,
    then 32 KiB blocks of chunks, each with a 7-byte header: CRC-32, length, type FULL=1 / FIRST / MIDDLE / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:            # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def test_wandb_offline_run_holds_the_logged_losses_samples_and_eval_row(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'dfs[wandb]')")
    from dfs.train import TrainConfig, Trainer

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")

    def data(step, g):
        x = torch.randn(16, 2, generator=g)
        return x, x.sum(1, keepdim=True)

    tr = Trainer(torch.nn.Linear(2, 1), lambda m, b, s: torch.mean((m(b[0]) - b[1]) ** 2), data,
                 TrainConfig(steps=6, log_every=2, progress=False, ema_decay=None, wandb_project="dfs-test"))
    tr.fit()
    tr.log_wandb({"samples/swaps": torch.rand(2, 3, 8, 8) * 2 - 1, "eval/id_top1": 0.25})
    tr.finish_wandb()
    import wandb
    wandb.teardown()       # finish() returns before wandb's service has written the run's file; teardown waits
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    rows = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in _wandb_records(runs[0]) if r.WhichOneof("record_type") == "history"]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    assert losses == [(h["step"], pytest.approx(h["loss"])) for h in tr.history]
    assert [r["lr"] for r in rows if "lr" in r] == [h["lr"] for h in tr.history]
    last = rows[-1]
    assert last["eval/id_top1"] == 0.25 and last["samples/swaps/_type"] == "image-file"
    assert (runs[0].parent / "files" / last["samples/swaps/path"]).is_file()


def test_the_wandb_flag_is_one_option_on_every_training_command():
    from dfs.cli import build_parser

    p = build_parser()
    for argv in (["train-swap"], ["prune", "--checkpoint", "c", "--ratio", "0.5", "--out", "o"]):
        assert p.parse_args(argv + ["--wandb", "proj"]).wandb_project == "proj"
        assert p.parse_args(argv).wandb_project is None


@pytest.mark.slow
def test_train_swap_with_wandb_logs_losses_and_a_sample_grid(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'dfs[wandb]')")

    import wandb

    from dfs.cli import main
    from test_swap_diffusion import small_training_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["train-swap", "--config", small_training_config(tmp_path), "--no-progress", "--wandb", "dfs-test"]) == 0
    wandb.teardown()
    (run,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    rows = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in _wandb_records(run) if r.WhichOneof("record_type") == "history"]
    assert any("loss" in r and "lr" in r for r in rows)
    grid = [r for r in rows if "samples/swaps/_type" in r]
    assert grid and -1 <= grid[0]["samples/cos_source"] <= 1
    assert (run.parent / "files" / grid[0]["samples/swaps/path"]).is_file()

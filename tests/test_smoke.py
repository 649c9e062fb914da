"""Smoke mode (``dfs reproduce --smoke``): with DFS_SMOKE=1 each loop is capped where its length is decided, and
without it nothing changes; a smoke run executes full mode, writes apart from the quick run, and is labelled."""
import json

import nbformat
import pytest
import torch

from dfs import cli, smoke
from dfs.reproduce import reproduce
from dfs.train import Trainer, TrainConfig

CAPS = smoke.SmokeCaps()


@pytest.fixture()
def smoke_on(monkeypatch, tmp_path):
    monkeypatch.setenv("DFS_SMOKE", "1")
    monkeypatch.setenv("DFS_SMOKE_DIR", str(tmp_path / "smoke"))
    return tmp_path / "smoke"


def test_caps_only_with_dfs_smoke_1(monkeypatch):
    monkeypatch.delenv("DFS_SMOKE", raising=False)
    assert smoke.smoke_caps() is None and smoke.cap(500, "max_train_steps") == 500
    monkeypatch.setenv("DFS_SMOKE", "0")
    assert smoke.smoke_caps() is None
    monkeypatch.setenv("DFS_SMOKE", "1")
    assert smoke.smoke_caps() == CAPS and smoke.cap(500, "max_train_steps") == CAPS.max_train_steps
    assert smoke.cap(1, "max_train_steps") == 1
    monkeypatch.setenv("DFS_SMOKE", "yes")
    with pytest.raises(ValueError, match="DFS_SMOKE='yes'"):
        smoke.smoke_caps()


def _fit(steps):
    torch.manual_seed(0)
    data = lambda step, g: torch.randn(4, 3, generator=g)
    tr = Trainer(torch.nn.Linear(3, 1), lambda m, x, step: m(x).pow(2).mean(), data,
                 TrainConfig(steps=steps, log_every=1, progress=False, device="cpu", ema_decay=None))
    tr.fit()
    return tr


def test_trainer_stops_after_the_smoke_step_cap(monkeypatch, smoke_on):
    tr = _fit(7)
    assert tr.step == CAPS.max_train_steps and [h["step"] for h in tr.history] == [1, 2]
    monkeypatch.delenv("DFS_SMOKE")
    assert _fit(7).step == 7


def test_face_presets_are_capped_and_their_runs_go_to_the_smoke_folder(monkeypatch, smoke_on):
    from dfs.swap.config import load_config
    from dfs.swap.faceshifter import load_config as fs_config

    cfg, fs = load_config("full"), fs_config("full")
    assert (cfg.batch_size, cfg.steps, cfg.max_per_identity) == (CAPS.max_batch, CAPS.max_train_steps,
                                                                 CAPS.max_per_identity)
    assert (fs.batch_size, fs.steps, fs.hear_steps) == (CAPS.max_batch, CAPS.max_train_steps, CAPS.max_train_steps)
    assert cfg.image_size == 128 and cfg.prediction == "v" and cfg.mixed_precision == "bf16"   # the model is full
    assert fs.image_size == 256 and fs.mixed_precision == "bf16"
    assert cfg.checkpoint_dir == "checkpoints/swap-full"          # the config keeps its setting ...
    assert cfg.resolved_checkpoint_dir() == smoke_on / "checkpoints" / "swap-full"   # ... resolved apart
    assert fs.resolved_checkpoint_dir() == smoke_on / "checkpoints" / "faceshifter-full"
    monkeypatch.delenv("DFS_SMOKE")
    cfg, fs = load_config("full"), fs_config("full")
    assert (cfg.batch_size, cfg.steps, fs.steps, fs.hear_steps) == (32, 200_000, 500_000, 100_000)
    from dfs.paths import repo_root
    assert cfg.resolved_checkpoint_dir() == repo_root() / "checkpoints" / "swap-full"


def test_swap_sampler_runs_the_capped_number_of_steps(monkeypatch, smoke_on):
    import dfs.swap.diffusion as D
    from dfs.swap.config import SwapConfig

    calls = []
    monkeypatch.setattr(D, "ddim_sample", lambda eps, sched, shape, steps, *a, **k: calls.append(steps))
    model = D.SwapDiffusion(SwapConfig())
    x = torch.zeros(1, 3, 32, 32)
    D.sample_swap(model, x, torch.ones(1, 1, 32, 32), torch.rand(1, 68, 2) * 32, torch.randn(1, 128), steps=25)
    monkeypatch.delenv("DFS_SMOKE")
    D.sample_swap(model, x, torch.ones(1, 1, 32, 32), torch.rand(1, 68, 2) * 32, torch.randn(1, 128), steps=25)
    assert calls == [CAPS.max_sampler_steps, 25]


def test_study_grids_are_capped(monkeypatch, smoke_on):
    from dfs import elbo_study, gan_study, latent_study, toy

    g = gan_study.StudyConfig()                       # the full study's datasets and variants, few seeds and steps
    assert (g.seeds, g.steps, g.diffusion_steps) == (CAPS.max_seeds, CAPS.max_train_steps, CAPS.max_train_steps)
    assert g.shown_steps == tuple(range(g.eval_every, g.steps + 1, g.eval_every)) and len(g.shown_steps) == CAPS.max_grid
    assert g.datasets == ("eight_gaussians", "grid25")
    e = elbo_study.study_config(quick=False)
    assert e.model == "unet" and e.T == CAPS.max_chain and len(e.runs) == 5
    assert (e.batch_size, e.n_samples, e.Ks) == (CAPS.max_batch, CAPS.max_data_items, (10, 25))
    train, test = elbo_study.digits_8bit(flat=False)
    assert len(train) == len(test) == CAPS.max_data_items
    r = latent_study.recipe(quick=False)
    assert r.ae_preset == "small" and max(r.ae_batch, r.uncond_batch, r.cond_batch) == CAPS.max_batch
    assert len(latent_study.digits_split(r)["x_test"]) == 4 * CAPS.max_data_items
    assert toy.samples_per_sampler(quick=False) == CAPS.max_data_items
    monkeypatch.delenv("DFS_SMOKE")
    assert gan_study.StudyConfig().seeds == 10 and elbo_study.study_config(quick=False).n_samples == 1000
    assert latent_study.recipe(quick=False).cond_batch == 128
    assert (toy.samples_per_sampler(quick=True), toy.samples_per_sampler(quick=False)) == (1500, 5000)
    assert len(latent_study.digits_split(latent_study.recipe(quick=False))["x_test"]) == 1797 - 1500


def test_smoke_tables_are_labelled_and_kept_out_of_the_results_chapter(monkeypatch, smoke_on, tmp_path):
    from dfs import figures, results, results_chapter

    figs = tmp_path / "figs"
    figures.set_context(notebook="03_elbo_losses", quick=False, seed=0, device="cpu")
    results.record("03_t", [{"a": "x", "b": 1.0}], "caption", directory=figs)
    table = json.loads((figs / "results" / "03_t.json").read_text())
    assert table["smoke"] is True and results.mode_name(table) == "smoke"
    assert "SMOKE" in results.source_text(table)
    assert [t["name"] for t in results_chapter.build_chapter(figs, results_root=tmp_path).tables] == ["03_t"]
    monkeypatch.delenv("DFS_SMOKE")
    chapter = results_chapter.build_chapter(figs, results_root=tmp_path)
    assert chapter.tables == [] and "03_elbo_losses" in chapter.missing


def _env_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("QUICK = True\nSEED = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import os, matplotlib.pyplot as plt\nfrom dfs.notebook import setup\nfrom dfs.figures import save\n"
        "setup('01_env', quick=QUICK)\nsave(plt.figure(), '01_env')\n"
        "print('SEEN', QUICK, os.environ.get('DFS_SMOKE'), os.environ['DFS_FIGURES'])")]
    nbformat.write(nb, path)


def test_reproduce_smoke_runs_full_mode_with_the_caps_apart_from_the_quick_run(tmp_path, monkeypatch):
    monkeypatch.delenv("DFS_SMOKE", raising=False)
    monkeypatch.delenv("DFS_SMOKE_DIR", raising=False)
    quick_figures = tmp_path / "figures"
    monkeypatch.setenv("DFS_FIGURES", str(quick_figures))
    d = tmp_path / "notebooks"
    d.mkdir()
    _env_notebook(d / "01_env.ipynb")
    build = tmp_path / "build"
    reproduce(smoke=True, out=build, notebooks_dir=d, log=lambda *_: None)
    executed = nbformat.read(build / "smoke" / "notebooks" / "01_env.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert f"SEEN False 1 {build.resolve() / 'smoke' / 'figures'}" in printed
    assert "SMOKE" in printed                                               # the set-up line says so
    manifest = json.loads((build / "smoke" / "figures" / "MANIFEST.json").read_text())
    assert manifest["01_env"]["mode"] == "smoke"
    assert not quick_figures.exists() and not (build / "notebooks").exists()   # the quick run's places untouched
    import os
    assert "DFS_SMOKE" not in os.environ and os.environ["DFS_FIGURES"] == str(quick_figures)   # restored
    with pytest.raises(ValueError, match="leave out --quick"):
        reproduce(quick=True, smoke=True, out=build, notebooks_dir=d)


def test_cli_help_lists_smoke(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    assert "--smoke" in capsys.readouterr().out


def test_a_bf16_preset_trains_under_bf16_autocast_on_the_cpu(smoke_on):
    """What the smoke run exercises on CI's CPU where a full preset asks for bf16 (the swap models' full presets):
    inside the model the layers compute in bf16 (accelerate hands the output back in fp32)."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, h):
            seen.append(h.dtype)
            return h

    from accelerate.state import AcceleratorState

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), Probe(), torch.nn.Linear(4, 1))
    AcceleratorState._reset_state(True)   # accelerate keeps one precision per process: earlier tests' was fp32
    try:
        Trainer(model, lambda m, x, step: m(x).float().pow(2).mean(), lambda step, g: torch.randn(4, 3, generator=g),
                TrainConfig(steps=10, progress=False, ema_decay=None, mixed_precision="bf16")).fit()   # as the presets
    finally:
        AcceleratorState._reset_state(True)
    assert seen == [torch.bfloat16] * CAPS.max_train_steps

"""The weights that ship with the repository: the quick diffusion swap and the quick FaceShifter.

    dfs/weights/swap-quick/            ema-0000k-of-0000n.safetensors (fp16 parameters, in shards of < 6 MiB),
                                       state.json, provenance.json
    dfs/weights/faceshifter-quick/     aei/ and hear/, each the same three files

``dfs swap``, ``dfs eval`` and notebooks 06-08 load them when no ``--checkpoint`` is given
(:func:`shipped_checkpoint`).  ``dfs train-swap --config quick`` (``--model faceshifter``) re-creates the runs
they came from in ``checkpoints/``; ``dfs ship-weights`` (:func:`ship`) turns such a run into the shipped folder,
with a provenance file saying what made it: the command, the commit, the data, the wall time and peak memory
(from a ``/usr/bin/time -v`` log of the training), the final losses and, when given, the evaluation row.
"""
from __future__ import annotations

import datetime
import json
import re
import subprocess
from pathlib import Path

from dfs.train import export_weights, latest_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = {"diffusion": "swap-quick", "faceshifter": "faceshifter-quick"}
RETRAIN = {"diffusion": "dfs train-swap --config quick",
           "faceshifter": "dfs train-swap --model faceshifter --config quick"}


def shipped_checkpoint(model: str) -> Path:
    """The shipped folder of ``model`` ("diffusion" or "faceshifter"); a clear error when it is missing."""
    if model not in SHIPPED:
        raise ValueError(f"no shipped weights for {model!r}; there are {sorted(SHIPPED)}")
    path = WEIGHTS_DIR / SHIPPED[model]
    if not path.is_dir():
        raise FileNotFoundError(f"the shipped {model} weights are missing ({path}): restore them with git, or train "
                                f"your own with `{RETRAIN[model]}` and pass --checkpoint checkpoints/"
                                f"{SHIPPED[model]}")
    return path


def read_time_log(path: str | Path) -> dict:
    """Wall time (s), user + system CPU time (s) and peak memory (MiB) from a ``/usr/bin/time -v`` log."""
    text = Path(path).read_text(errors="replace")
    out = {}
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        out["wall_seconds"] = sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
    cpu = [float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text)]
    if cpu:
        out["cpu_seconds"] = sum(cpu)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_memory_mib"] = int(m.group(1)) / 1024
    if not out:
        raise ValueError(f"{path} holds no /usr/bin/time -v report (run the training as `/usr/bin/time -v dfs "
                         "train-swap ... 2> log`)")
    return out


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=WEIGHTS_DIR.parent.parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(model: str, run: Path, time_log=None, eval_json=None, note: str = "", data=None) -> dict:
    """What made the run in ``run`` (module docstring).  ``data``: the faces folder it trained on, for a run that
    did not record it."""
    state = json.loads((run / "state.json").read_text())
    extra = state["config"].get("extra", {})
    cfg = extra.get("swap_config") or extra.get("faceshifter_config") or {}
    info = {"model": model, "command": RETRAIN[model], "step": state["step"],
            "commit": _git("rev-parse", "HEAD"), "uncommitted_changes": bool(_git("status", "--porcelain")),
            "data": extra.get("data_dir") or cfg.get("data") or (str(data) if data else "not recorded"),
            "held_out": cfg.get("held_out"), "split_seed": cfg.get("split_seed"),
            "final_losses": state["history"][-1] if state["history"] else None,
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    import torch
    info["torch"] = torch.__version__
    if time_log:
        logs = [time_log] if isinstance(time_log, (str, Path)) else list(time_log)
        parts = [read_time_log(p) for p in logs]       # a run trained in segments (resumed): their sum
        total = {k: sum(p.get(k, 0.0) for p in parts) for k in ("wall_seconds", "cpu_seconds")}
        total["peak_memory_mib"] = max(p.get("peak_memory_mib", 0.0) for p in parts)
        info["training_time"] = {**total, "segments": len(parts), "measured_by": "/usr/bin/time -v, one CPU thread "
                                 "(OMP_NUM_THREADS=1)"}
    if eval_json:
        ev = json.loads(Path(eval_json).read_text())
        name = ev["settings"]["method"]
        info["evaluation"] = {"command": ev.get("command"), "settings": ev["settings"],
                              "row": ev["rows"].get(name), "intervals": ev.get("intervals", {}).get(name),
                              "difference_to_" + str(ev.get("compare")): ev.get("differences", {}).get(name)}
    if note:
        info["note"] = note
    return info


def ship(model: str, checkpoint: str | Path, time_log=None, eval_json=None, out: str | Path | None = None,
         note: str = "", data=None) -> Path:
    """Export the run in ``checkpoint`` (a run folder; FaceShifter's holds aei/ and hear/) as the shipped weights
    of ``model`` (or into ``out``)."""
    if model not in SHIPPED:
        raise ValueError(f"model must be one of {sorted(SHIPPED)}, got {model!r}")
    root = Path(checkpoint)
    out = Path(out) if out is not None else WEIGHTS_DIR / SHIPPED[model]
    stages = [("", root)] if model == "diffusion" else [("aei", root / "aei"), ("hear", root / "hear")]
    for sub, folder in stages:
        last = folder if (folder / "state.json").is_file() else latest_checkpoint(folder)
        if last is None:
            raise FileNotFoundError(f"no checkpoint in {folder}: train it with `{RETRAIN[model]}` first")
        info = provenance(model, last, time_log, eval_json if sub in ("", "hear") else None, note, data)
        dest = export_weights(last, out / sub if sub else out, info)
        if model == "diffusion":
            _use_preset_sampler_defaults(dest, info)
    return out


def _use_preset_sampler_defaults(folder: Path, info: dict) -> None:
    """The sampler defaults (steps, guidance, strength, ...) are not part of the model: the shipped folder takes the
    quick preset's, so that the preset stays their one source, and the provenance file records them."""
    from dfs.swap.config import SamplerOptions, load_config

    preset = load_config("quick")
    state = json.loads((folder / "state.json").read_text())
    cfg = state["config"]["extra"]["swap_config"]
    defaults = {c: getattr(preset, c) for c in SamplerOptions.CONFIG_FIELDS.values()}
    info["sampler_defaults"] = {"from": "dfs/swap/presets/quick.yaml", **defaults,
                                "trained_with": {c: cfg.get(c) for c in defaults}}
    cfg.update(defaults)
    (folder / "state.json").write_text(json.dumps(state, indent=1))
    (folder / "provenance.json").write_text(json.dumps(info, indent=1, default=str) + "\n")

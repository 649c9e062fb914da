"""The ``dfs`` command line. ``dfs reproduce --quick`` is the main job; later commands plug in here."""
from __future__ import annotations

import argparse
import json
import sys

from .swap.config import PersonalizeOptions, SamplerOptions
from .train import add_wandb_argument


def _reproduce(args) -> int:
    from .reproduce import NotebookFailed, reproduce

    only = [s for part in (args.only or []) for s in part.split(",")] or None
    try:
        reproduce(quick=args.quick, only=only, out=args.out, smoke=args.smoke)
    except NotebookFailed as e:
        print(f"dfs reproduce: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"dfs reproduce: {e}", file=sys.stderr)
        return 2
    return 0


def _exercises(args) -> int:
    from .exercises.student import grade, grade_table, student_edition

    if (args.out is None) == (args.grade is None):
        print("dfs exercises: give --out DIR (write the student edition) or --grade NOTEBOOK", file=sys.stderr)
        return 2
    try:
        if args.out is not None:
            for path in student_edition(args.out):
                print(f"wrote {path}")
            return 0
        results = grade(args.grade)
    except (ValueError, FileNotFoundError) as e:
        print(f"dfs exercises: {e}", file=sys.stderr)
        return 2
    print(grade_table(results))
    return 0 if all(r.passed for r in results) else 1


def _book(args) -> int:
    from .book import build_book
    from .reproduce import NotebookFailed

    try:
        build_book(args.build, args.out, exercises=not args.no_exercises)
    except (FileNotFoundError, NotebookFailed) as e:
        print(f"dfs book: {e}", file=sys.stderr)
        return 2
    return 0


def _eval(args) -> int:
    from .evaluate import evaluate
    from .faces.detect import FaceNotFoundError
    from .swap.diffusion import SwapOutOfMemory

    options = SamplerOptions.from_args(args).given()
    if options and args.method != "diffusion":
        print(f"dfs eval: {SamplerOptions.flags(options)} apply to --method diffusion, not {args.method}",
              file=sys.stderr)
        return 2
    if args.checkpoint is not None:
        if args.method not in ("diffusion", "faceshifter"):
            print(f"dfs eval: --checkpoint applies to --method diffusion or faceshifter, not {args.method}",
                  file=sys.stderr)
            return 2
        options["checkpoint"] = args.checkpoint
    if args.no_hear:
        if args.method != "faceshifter":
            print("dfs eval: --no-hear applies to --method faceshifter", file=sys.stderr)
            return 2
        options["hear"] = False
    try:
        report = evaluate(args.method, data=args.data, pairs=args.pairs, seed=args.seed, out=args.out,
                          held_out=args.held_out, split_seed=args.split_seed,
                          max_per_identity=args.max_per_identity, self_pairs=args.self_pairs,
                          progress=not args.no_progress, keep_examples=False, method_options=options,
                          compare=None if args.compare == "none" else args.compare,
                          command="dfs " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else None)
    except (ValueError, FileNotFoundError, FaceNotFoundError, SwapOutOfMemory) as e:
        print(f"dfs eval: {e}", file=sys.stderr)
        return 2
    print(report.table)
    for f in report.files:
        print(f"wrote {f}")
    return 0


def _train_swap(args) -> int:
    from .swap.config import load_config
    from .swap.diffusion import SwapOutOfMemory, train_swap

    if args.model == "faceshifter":
        return _train_faceshifter(args)
    if args.hear_steps is not None:
        print("dfs train-swap: --hear-steps applies to --model faceshifter", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, **({"steps": args.steps} if args.steps is not None else {}))
        trainer = train_swap(cfg, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
                             wandb_project=args.wandb_project)
    except (ValueError, FileNotFoundError, SwapOutOfMemory) as e:
        print(f"dfs train-swap: {e}", file=sys.stderr)
        return 2
    from .train import latest_checkpoint
    last = trainer.history[-1] if trainer.history else {}
    if trainer.accelerator.is_main_process:
        print(f"trained to step {trainer.step}" + (f" (loss {last['loss']:.4g})" if "loss" in last else "")
              + f"; checkpoint {latest_checkpoint(trainer.config.checkpoint_dir)}")
    trainer.accelerator.end_training()   # several processes: close the process group before exiting
    return 0


def _train_faceshifter(args) -> int:
    import time

    from .swap.diffusion import SwapOutOfMemory
    from .swap.faceshifter import load_config
    from .swap.faceshifter_train import train_faceshifter

    over = {k: v for k, v in (("steps", args.steps), ("hear_steps", args.hear_steps)) if v is not None}
    t0 = time.perf_counter()
    try:
        cfg = load_config(args.config, **over)
        trainers = train_faceshifter(cfg, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
                                     wandb_project=args.wandb_project)
    except (ValueError, FileNotFoundError, SwapOutOfMemory) as e:
        print(f"dfs train-swap: {e}", file=sys.stderr)
        return 2
    from .train import latest_checkpoint
    main = all(tr.accelerator.is_main_process for tr in trainers.values())
    for stage, tr in trainers.items():
        last = tr.history[-1] if tr.history else {}
        shown = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss_g", "loss_d", "loss") if k in last)
        if main:
            print(f"{stage}: trained to step {tr.step}" + (f" ({shown})" if shown else "")
                  + f"; checkpoint {latest_checkpoint(tr.config.checkpoint_dir)}")
    if main:
        print(f"wall time {time.perf_counter() - t0:.0f} s")
    for tr in list(trainers.values())[-1:]:
        tr.accelerator.end_training()   # several processes: close the process group before exiting
    return 0


def _prune(args) -> int:
    from .swap.errors import SwapOutOfMemory

    try:
        from .compression import prune_checkpoint
        out = prune_checkpoint(args.checkpoint, args.ratio, args.out, fine_tune_steps=args.fine_tune_steps,
                               seed=args.seed, wandb_project=args.wandb_project, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, SwapOutOfMemory) as e:
        print(f"dfs prune: {e}", file=sys.stderr)
        return 2
    info = json.loads(((out / "aei") if (out / "aei").is_dir() else out).joinpath("state.json").read_text())
    p = info["config"]["extra"]["pruning"]
    print(f"pruned {p['ratio']:.0%} of the channels: {p['params']:,} parameters, {p['macs'] / 1e6:,.1f} M MACs per "
          f"network evaluation; wrote {out} (use it with --checkpoint {out})")
    return 0


def _ship_weights(args) -> int:
    from .swap.shipped import ship

    try:
        out = ship(args.model, args.checkpoint, time_log=args.time_log, eval_json=args.eval_json, note=args.note,
                   data=args.data)
    except (ValueError, FileNotFoundError) as e:
        print(f"dfs ship-weights: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _personalize(args) -> int:
    from .personalize import personalize
    from .swap.errors import SwapOutOfMemory

    try:
        concept, path = personalize(args.photos, args.name, PersonalizeOptions.from_args(args),
                                    checkpoint=args.checkpoint, out=args.out, progress=not args.no_progress,
                                    wandb_project=args.wandb_project)
    except (ValueError, FileNotFoundError, SwapOutOfMemory) as e:
        print(f"dfs personalize: {e}", file=sys.stderr)
        return 2
    last = concept.info["losses"][-1] if concept.info["losses"] else {}
    print(f"{concept.mode} concept {concept.name!r} from {len(concept.crops)} photos, {concept.info['steps']} steps"
          + (f" (loss {last['loss']:.4g})" if "loss" in last else "")
          + f"; wrote {path} ({path.stat().st_size / 2 ** 20:.2f} MiB) and {path.with_suffix('.json').name}")
    return 0


def _swap_method(args):
    from .swap import get_method
    from .swap.diffusion import DiffusionSwap

    if args.method == "diffusion":
        if args.no_hear:
            raise ValueError("--no-hear applies to --method faceshifter")
        return DiffusionSwap(args.checkpoint, sampler=SamplerOptions.from_args(args), batch_size=args.batch_size,
                             progress=True, concept=args.concept)
    if args.concept is not None:
        raise ValueError(f"--concept applies to --method diffusion, not {args.method}")
    given = SamplerOptions.from_args(args).given()
    if given:
        raise ValueError(f"{SamplerOptions.flags(given)} apply to --method diffusion, not {args.method}")
    if args.method == "faceshifter":
        from .swap.faceshifter import FaceShifterSwap
        return FaceShifterSwap(args.checkpoint, hear=not args.no_hear, batch_size=args.batch_size)
    if args.checkpoint is not None or args.no_hear:
        raise ValueError(f"--checkpoint/--no-hear do not apply to --method {args.method}")
    return get_method(args.method)


def _swap(args) -> int:
    import warnings

    from .faces.detect import FaceNotFoundError
    from .faces.images import BadImageError
    from .swap.errors import SwapOutOfMemory
    from .swap.pipeline import SwapNote

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SwapNote)
        try:
            paths = _run_swap(args)
        except (ValueError, FileNotFoundError, FaceNotFoundError, BadImageError, SwapOutOfMemory) as e:
            paths, error = [], str(e)
        else:
            error = None
    for w in caught:       # which face of a crowded photo was used, which targets were skipped: one line each
        if issubclass(w.category, SwapNote):
            print(f"dfs swap: note: {w.message}", file=sys.stderr)
    if error is not None:
        print(f"dfs swap: {error}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


def _run_swap(args) -> list:
    """The swaps of ``dfs swap``: one target photo, or a folder of them (targets without a face are skipped)."""
    from pathlib import Path

    from .swap.pipeline import SwapPipeline

    method = _swap_method(args)
    pipe, target, source = SwapPipeline(method), Path(args.target), args.source
    if source is None:
        if getattr(method, "concept", None) is None:
            raise ValueError("give --source PHOTO (the identity to use), or --concept NAME (a person taught with dfs "
                             "personalize)")
        from .swap.concept import reference_face
        source = reference_face(method.concept)       # the concept's first photo gives the pixels
    if not target.is_dir():
        return [pipe.swap(source, target, seed=args.seed, source_face=args.source_face,
                          target_face=args.target_face).save(args.out)]
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        raise ValueError(f"--target is a folder, so --out must be a folder, got {out}")
    if args.target_face is not None:
        raise ValueError("--target-face picks a face in one target photo; with a folder of targets each photo's "
                         "largest face is used")
    results = pipe.swap_many(source, target, seed=args.seed, errors="skip", source_face=args.source_face)
    return [r.save(out / (Path(r.target.name).stem + ".png")) for r in results]


def _held_out(text: str):
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfs", description="Face swap with diffusion models: the thesis companion.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="execute the notebooks in order and regenerate figures/")
    r.add_argument("--quick", action="store_true", help="small, CPU-friendly settings (minutes, not hours)")
    r.add_argument("--smoke", action="store_true", help="every notebook in FULL mode at toy length (a couple of "
                   "steps, batches and pairs: dfs.smoke), written to <out>/smoke/; checks full-only code in minutes")
    r.add_argument("--only", action="append", metavar="NN[,NN]", help="run only these notebooks, e.g. 01,02")
    r.add_argument("--out", default="build", help="where executed notebooks go (default: build/)")
    r.set_defaults(func=_reproduce)

    x = sub.add_parser("exercises", help="write the student edition of the exercise notebooks, or grade one")
    x.add_argument("--out", default=None, help="folder for the student edition (solutions replaced by stubs)")
    x.add_argument("--grade", default=None, metavar="NOTEBOOK", help="run a filled-in exercise notebook and check "
                   "every exercise it names (exit 1 if any fails)")
    x.set_defaults(func=_exercises)

    b = sub.add_parser("book", help="a static HTML site of the executed notebooks (after dfs reproduce)")
    b.add_argument("--build", default="build", help="the folder dfs reproduce wrote to (default build/)")
    b.add_argument("--out", default=None, help="where the site goes (default <build>/book)")
    b.add_argument("--no-exercises", action="store_true", help="leave the exercise notebooks out")
    b.set_defaults(func=_book)

    from .swap import METHODS
    e = sub.add_parser("eval", help="judge a swap method on held-out face pairs (JSON + markdown table)")
    e.add_argument("--method", default="classical", choices=sorted(METHODS), help="the swap method")
    e.add_argument("--data", default=None, help="faces: LFW (a folder with lfw_home/) or a folder-per-identity "
                   "tree (default: DFS_DATA or data/)")
    e.add_argument("--pairs", type=int, default=20, help="number of (source, target) pairs (default 20)")
    e.add_argument("--seed", type=int, default=0, help="seed of the pair draw and of the method")
    e.add_argument("--out", default="results", help="folder for eval_*.json and eval_*.md (default results/)")
    e.add_argument("--held-out", type=_held_out, default=0.2,
                   help="held-out identities: a fraction in (0, 1) or a count (default 0.2)")
    e.add_argument("--split-seed", type=int, default=0, help="seed of the identity split (default 0)")
    e.add_argument("--max-per-identity", type=int, default=10, help="gallery photos per person (default 10)")
    e.add_argument("--self-pairs", type=int, default=None,
                   help="targets swapped onto themselves for PSNR/SSIM (default min(pairs, 10))")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument("--checkpoint", default=None, help="diffusion or faceshifter: checkpoint (run or step folder)")
    e.add_argument("--no-hear", action="store_true", help="faceshifter: AEI-Net alone, without HEAR-Net")
    e.add_argument("--compare", default="classical", choices=sorted(METHODS) + ["none"],
                   help="a method run on the same pairs, to which every row's paired differences are computed "
                        "(default classical)")
    SamplerOptions.add_arguments(e)
    e.set_defaults(func=_eval)

    t = sub.add_parser("train-swap", help="train a face-swap model (resumes from its checkpoints)")
    t.add_argument("--model", default="diffusion", choices=["diffusion", "faceshifter"],
                   help="the diffusion swap (default) or FaceShifter (AEI-Net, then HEAR-Net)")
    t.add_argument("--config", default="quick", help="a preset (quick, full, quick_tokens; faceshifter: quick, full) "
                   "or a YAML file (default quick)")
    t.add_argument("--steps", type=int, default=None, help="override the configuration's number of steps "
                   "(faceshifter: AEI-Net's)")
    t.add_argument("--hear-steps", type=int, default=None, help="faceshifter: override HEAR-Net's steps")
    t.add_argument("--checkpoint-dir", default=None, help="override the configuration's checkpoint folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_wandb_argument(t)
    t.set_defaults(func=_train_swap)

    pr = sub.add_parser("prune", help="prune a swap model's channels (Torch-Pruning), fine-tune it, write a checkpoint")
    pr.add_argument("--checkpoint", required=True, help="a diffusion-swap or FaceShifter checkpoint (run, step or "
                    "shipped folder, e.g. dfs/weights/swap-quick)")
    pr.add_argument("--ratio", type=float, required=True, help="fraction of the channels removed from every "
                    "prunable layer, in [0, 1)")
    pr.add_argument("--out", required=True, help="folder for the pruned checkpoint (dfs swap/eval --checkpoint)")
    pr.add_argument("--fine-tune-steps", type=int, default=0, help="training steps after pruning, with the model's "
                    "own loss (default 0)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the fine-tune (default 0)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_wandb_argument(pr)
    pr.set_defaults(func=_prune)

    w = sub.add_parser("ship-weights", help="export a trained quick run as the weights that ship in dfs/weights/")
    w.add_argument("--model", default="diffusion", choices=["diffusion", "faceshifter"])
    w.add_argument("--checkpoint", required=True, help="the run folder (checkpoints/swap-quick, ...)")
    w.add_argument("--time-log", action="append", default=None,
                   help="the /usr/bin/time -v log of the training (wall time, memory); repeat it for a run trained in "
                        "segments (their times add up)")
    w.add_argument("--eval-json", default=None, help="a dfs eval JSON of this run, for the provenance file")
    w.add_argument("--note", default="", help="a sentence for the provenance file")
    w.add_argument("--data", default=None, help="the faces folder the run trained on, if the run did not record it")
    w.set_defaults(func=_ship_weights)

    s = sub.add_parser("swap", help="put the source's face identity onto the target photo(s)")
    s.add_argument("--method", default="diffusion", choices=sorted(METHODS),
                   help="the swap method (default diffusion)")
    s.add_argument("--source", default=None, help="photo of the identity to use (with --concept: optional, the "
                   "photo whose pixels are warped onto the target; default the concept's first photo)")
    s.add_argument("--concept", default=None, help="diffusion: a person taught with dfs personalize (a name in "
                   "concepts/ or a .safetensors file): their learned identity replaces the source photo's")
    s.add_argument("--target", required=True, help="a photo, or a folder of photos (swapped in batches)")
    s.add_argument("--out", required=True, help="output .png (a folder when --target is a folder)")
    SamplerOptions.add_arguments(s)
    s.add_argument("--seed", type=int, default=0, help="seed of the first target (the i-th uses seed + i)")
    s.add_argument("--source-face", type=int, default=None,
                   help="in a source photo with several faces, the K-th largest (default 0: the largest)")
    s.add_argument("--target-face", type=int, default=None,
                   help="in a target photo with several faces, the K-th largest (default 0: the largest)")
    s.add_argument("--batch-size", type=int, default=8, help="targets per sampling batch (default 8)")
    s.add_argument("--checkpoint", default=None, help="checkpoint: a run folder or step folder (default: the "
                   "shipped quick model, dfs/weights/swap-quick or dfs/weights/faceshifter-quick)")
    s.add_argument("--no-hear", action="store_true", help="faceshifter: AEI-Net alone, without HEAR-Net")
    s.set_defaults(func=_swap)

    z = sub.add_parser("personalize", help="teach the diffusion swap one person from a few photos (a concept for "
                       "dfs swap --concept)")
    z.add_argument("--photos", required=True, help="a folder of 3-5 photos of the person")
    z.add_argument("--name", required=True, help="the concept's name (its file name)")
    z.add_argument("--checkpoint", default=None, help="the swap model to personalise (default: the shipped quick "
                   "model)")
    z.add_argument("--out", default=None, help="folder for <name>.safetensors and <name>.json (default concepts/)")
    z.add_argument("--no-progress", action="store_true", help="no progress bar")
    PersonalizeOptions.add_arguments(z)
    add_wandb_argument(z)
    z.set_defaults(func=_personalize)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

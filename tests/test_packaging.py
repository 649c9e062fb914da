"""The set-up files agree with each other: pyproject, environment.yml, README's two commands, .ci/run."""
import re
import tomllib
from pathlib import Path

import yaml

from dfs.reproduce import NOTEBOOK_PATTERN

ROOT = Path(__file__).resolve().parent.parent
AUTHOR_PACKAGES = {"jupyterlab", "torch", "torchvision", "diffusers", "matplotlib", "plotly", "numpy", "insightface"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower()


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_top_level_layout_is_what_the_author_asked_for():
    for name in ["notebooks", "dfs", "data", "figures", "environment.yml", "README.md", "pyproject.toml",
                 "tests", "benchmarks", ".ci/run"]:
        assert (ROOT / name).exists(), f"missing top-level {name}"


def test_author_packages_are_dependencies_and_torch_is_a_range():
    proj = _pyproject()
    reqs = proj["dependencies"] + [r for extra in proj["optional-dependencies"].values() for r in extra]
    names = {_name(r) for r in reqs}
    assert AUTHOR_PACKAGES <= names, f"missing: {AUTHOR_PACKAGES - names}"
    for r in reqs:
        if _name(r) in {"torch", "torchvision"}:
            assert "==" not in r, f"{r}: users get a range, not this machine's exact pin"
    assert proj["scripts"]["dfs"] == "dfs.cli:main"


def test_environment_yml_installs_this_package_with_existing_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_part = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    local = [p for p in pip_part if re.search(r"(^|\s)\.(\[|$)", p) or p.strip().startswith("-e .")]
    assert local, "environment.yml must pip-install the package itself (-e .[extras])"
    extras = set(re.search(r"\[([^\]]+)\]", local[0]).group(1).split(","))
    assert extras <= set(_pyproject()["optional-dependencies"]), f"unknown extras {extras}"
    # conda must not pin a second copy of a pip dependency with another version
    conda_names = {_name(d.split("=")[0]) for d in deps if isinstance(d, str)}
    assert conda_names <= {"python", "pip"}, f"duplicate dependency sources: {conda_names}"


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if "pip install" in line]
    main = [c for c in commands if "dfs reproduce" in c]
    tests = [c for c in commands if "pytest" in c]
    assert main and tests, "README needs the main-job command and the test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests[0] in ci, f".ci/run must run the README's test command verbatim: {tests[0]!r}"
    assert "torch==2.14.1" in ci and "torchvision==0.29.1" in ci
    for var in ["HF_HUB_OFFLINE=1", "WANDB_MODE=offline", "MPLBACKEND=Agg"]:
        assert var in ci


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted(p for p in (ROOT / "notebooks").iterdir() if NOTEBOOK_PATTERN.match(p.name)):
        assert nb.name in readme, f"README's notebook list misses {nb.name}"

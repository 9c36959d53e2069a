"""dvc.yaml: every stage's deps cover every avlips module its command runs, so a code change reruns the stage.

For each stage whose command is `avlips <subcommand>`, the modules are the subcommand handler's imports
and, transitively, every import of those modules (module level or inside functions: a stage runs its
functions), plus the plugins that the generator and detector registries load by entry point. A dep
covers a module when it names the file or a folder above it.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from avlips.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
# Modules that load plugins by entry point, and the entry-point group each reads (pyproject.toml).
MODULE_NAME = re.compile(r"^avlips(\.[A-Za-z_]\w*)+$")
REGISTRIES = {"avlips.generators.base": "avlips.generators", "avlips.model.detectors": "avlips.detectors"}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _avlips_imports(tree: ast.AST, package: str) -> set[str]:
    """The avlips modules an AST imports (for `from x import y`, both x and x.y: y may be a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = (importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level
                    else node.module or "")
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    # A module named by a module-level constant, e.g. WORKER_TEMPLATE, the one the loader's forkserver preloads.
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str) and MODULE_NAME.match(node.value.value):
            found.add(node.value.value)
    return {name for name in found if name == "avlips" or name.startswith("avlips.")}


def _source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # `from avlips.x import name`: avlips.x.name is no module
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin).resolve()


def _entry_point_modules(group: str) -> set[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    targets = pyproject["project"].get("entry-points", {}).get(group, {}).values()
    return {target.split(":")[0] for target in targets}


def modules_run_by(start: set[str]) -> set[Path]:
    """The files of `start` and of every avlips module they import, transitively."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a module runs its packages
        path = _source_file(module)
        if path is None:
            continue
        files.add(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        todo += _avlips_imports(ast.parse(path.read_text(encoding="utf-8")), package)
        if module in REGISTRIES:
            todo += _entry_point_modules(REGISTRIES[module])
    return files


def command_files(command: str) -> set[Path]:
    """The avlips source files that `avlips <subcommand> ...` runs."""
    argv = shlex.split(command)
    assert argv[0] == "avlips", command
    args, _ = build_parser().parse_known_args(argv[1:])
    cli = REPO / "avlips" / "cli.py"
    # The CLI module's own imports, then the handler's (the other handlers' lazy imports never run).
    top = ast.Module(body=[node for node in ast.parse(cli.read_text()).body
                           if isinstance(node, (ast.Import, ast.ImportFrom))], type_ignores=[])
    handler = ast.parse(inspect.getsource(args.handler))
    return {cli} | modules_run_by(_avlips_imports(top, "avlips") | _avlips_imports(handler, "avlips"))


def _covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def _dep_paths(stage: dict) -> list[str]:
    return [next(iter(dep)) if isinstance(dep, dict) else str(dep) for dep in stage.get("deps", [])]


AVLIPS_STAGES = sorted(name for name, stage in _stages().items() if str(stage.get("cmd", "")).startswith("avlips "))


def test_every_stage_runs_the_avlips_command():
    # A stage that runs code some other way would escape this check.
    assert AVLIPS_STAGES == sorted(_stages())


@pytest.mark.parametrize("name", AVLIPS_STAGES)
def test_stage_deps_cover_every_module_its_command_runs(name):
    stage = _stages()[name]
    files = command_files(stage["cmd"])
    assert any(p.name == "cli.py" for p in files) and len(files) > 5
    missing = sorted(str(p.relative_to(REPO)) for p in files if not _covered(p, _dep_paths(stage)))
    assert not missing, f"dvc.yaml stage {name!r} lacks deps on: {', '.join(missing)}"


def test_the_closure_sees_lazy_imports_and_plugins():
    # denoise_clip imports media.denoise inside a function; synthesize loads generators by entry point.
    denoise = {str(p.relative_to(REPO)) for p in command_files("avlips denoise")}
    assert {"pipelines/denoise.py", "media/denoise.py", "avlips/params.py"} <= denoise
    assert "model/train.py" not in denoise
    synthesize = {str(p.relative_to(REPO)) for p in command_files("avlips synthesize")}
    assert {"generators/mouth_rewrite.py", "generators/audio_swap.py"} <= synthesize
    # The loader's forkserver preloads a module it names in a string.
    assert "model/loader_worker_template.py" in {str(p.relative_to(REPO)) for p in command_files("avlips train")}

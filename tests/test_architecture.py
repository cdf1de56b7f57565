"""The package's layers: no import cycles, no upward imports, short engine functions, the loss alone.

Layers, lowest first, as :data:`LAYERS` states them (the one place; the package docstring and
docs/architecture.md are checked against it); each module may import only from its own layer and those below it.
The studies read runs through the engine's read-only view only: of the engine they may
import the run view and records, the config and the grid's labels, never the writer or the trainer.
Inside the engine, :data:`ENGINE_STAGES` orders its folders by a run's life in the same way.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gdsoftmax"
LAYERS = ["loss", "baselines", "analysis", "integrations", "engine", "studies", "labs", "top"]
# what a study may import from the engine: reading runs and naming their settings, nothing that trains or writes
STUDIES_MAY_IMPORT = {"gdsoftmax.engine.rundir.view", "gdsoftmax.engine.rundir.records",
                      "gdsoftmax.engine.config.schema", "gdsoftmax.engine.sweeps.grid"}
# the engine's folders by a run's life, lowest first: each imports only from its own folder and those before it
ENGINE_STAGES = ["workspace", "data", "models", "recipe", "config", "rundir", "tasks", "tracking", "loop", "sweeps"]
SHORT_FUNCTION_LAYERS = ("engine", "studies")
FUNCTION_LIMIT = 60  # lines, docstring included, in the engine and the studies
CLASS_LIMIT = 80  # lines, for the run directory's reader and writer
FILE_LIMIT = 400  # lines, every module


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported gdsoftmax module, whether the import is at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from gdsoftmax.loss import fused" may import a submodule: count the deepest module that exists
            names = [f"{node.module}.{alias.name}" if _is_module(f"{node.module}.{alias.name}") else node.module
                     for alias in node.names]
        else:
            continue
        found += [(name, id(node) in top_level) for name in names if name.split(".")[0] == "gdsoftmax"]
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports(graph) -> list[str]:
    return [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, targets in graph.items()
            for b, _ in targets if LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a))]


def studies_reaching_past_the_view(graph) -> list[str]:
    return [f"{a} imports {b}" for a, targets in graph.items() if layer_of(a) == "studies"
            for b, _ in targets if layer_of(b) == "engine" and b not in STUDIES_MAY_IMPORT]


def cycles(graph) -> list[list[str]]:
    """Import cycles through module-level imports (depth-first search, each cycle reported once)."""
    edges = {a: sorted({b for b, top in targets if top and b in graph and b != a}) for a, targets in graph.items()}
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [])
    return found


def test_the_checks_can_fail():
    fake = {"gdsoftmax.loss.a": [("gdsoftmax.engine.b", True)], "gdsoftmax.engine.b": [("gdsoftmax.loss.a", True)]}
    assert upward_imports(fake) == ["gdsoftmax.loss.a (loss) imports gdsoftmax.engine.b (engine)"]
    assert cycles(fake) == [["gdsoftmax.loss.a", "gdsoftmax.engine.b", "gdsoftmax.loss.a"]]


@pytest.mark.parametrize(("importer", "imported", "check"), [
    ("gdsoftmax.engine.sweeps.sweep", "gdsoftmax.studies.report", upward_imports),
    ("gdsoftmax.analysis.stats", "gdsoftmax.studies.claims", upward_imports),
    ("gdsoftmax.studies.report", "gdsoftmax.labs.peeled", upward_imports),
    ("gdsoftmax.studies.report", "gdsoftmax.engine.rundir.writer", studies_reaching_past_the_view),
    ("gdsoftmax.studies.table1_study", "gdsoftmax.engine.loop.trainer", studies_reaching_past_the_view),
])
def test_a_planted_violation_of_the_studies_layer_is_caught(importer, imported, check):
    graph = import_graph()
    planted = {**graph, importer: [*graph.get(importer, []), (imported, True)]}
    assert check(graph) == []
    assert len(check(planted)) == 1
    assert imported in check(planted)[0]


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "engine" and parts[2] in ENGINE_STAGES else None


def upward_stage_imports(graph) -> list[str]:
    return [f"{a} ({stage_of(a)}) imports {b} ({stage_of(b)})" for a, targets in graph.items() if stage_of(a)
            for b, _ in targets if stage_of(b) and ENGINE_STAGES.index(stage_of(b)) > ENGINE_STAGES.index(stage_of(a))]


def test_every_engine_module_is_in_a_stage_folder():
    """No flat modules in the engine: each lives in the folder of the stage of a run's life it serves."""
    flat = sorted(p.name for p in (PACKAGE / "engine").glob("*.py") if p.name != "__init__.py")
    folders = sorted(p.name for p in (PACKAGE / "engine").iterdir() if (p / "__init__.py").exists())
    assert flat == []
    assert folders == sorted(ENGINE_STAGES)


def test_no_engine_stage_imports_a_later_one():
    graph = import_graph()
    assert upward_stage_imports(graph) == []
    planted = {**graph, "gdsoftmax.engine.data.images": [("gdsoftmax.engine.loop.trainer", True)]}
    assert upward_stage_imports(planted) == [
        "gdsoftmax.engine.data.images (data) imports gdsoftmax.engine.loop.trainer (loop)"]


def test_layer_of_knows_the_studies():
    assert layer_of("gdsoftmax.studies.report") == "studies"
    assert LAYERS.index("engine") < LAYERS.index("studies") < LAYERS.index("labs")


def test_no_upward_imports():
    assert upward_imports(import_graph()) == []


def test_studies_read_runs_only_through_the_view():
    assert studies_reaching_past_the_view(import_graph()) == []


def test_no_study_or_report_module_is_left_in_the_engine():
    engine = {p.stem for p in (PACKAGE / "engine").rglob("*.py")}
    assert not engine & {"report", "claims", "beside_paper", "markdown", "epochs"}
    assert not [name for name in engine if name.startswith(("table1", "study", "ledger"))]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_subpackages_import_each_other_by_full_path_not_through_the_face():
    offenders = [a for a, targets in import_graph().items() for b, _ in targets
                 if b == "gdsoftmax" and layer_of(a) != "top"]
    assert offenders == []


def test_imports_inside_functions_only_in_the_command_line():
    """The command line imports a layer when its command runs (the engine needs the extras), the
    package's face imports the loss when one of its names is first used (so --help needs no torch), and the
    Python API imports Optuna and the studies when a search or a report runs (so a training pays for neither)."""
    inside = [(a, b) for a, targets in import_graph().items() for b, top in targets
              if not top and a not in ("gdsoftmax.cli", "gdsoftmax.__main__", "gdsoftmax", "gdsoftmax.api")
              and not a.startswith("gdsoftmax.cli.")]
    assert inside == []


def long_definitions(paths, kinds, limit) -> list[str]:
    long = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kinds) and node.end_lineno - node.lineno + 1 >= limit:
                long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return long


def test_engine_and_study_functions_are_short():
    paths = sorted(p for layer in SHORT_FUNCTION_LAYERS for p in (PACKAGE / layer).rglob("*.py"))
    assert long_definitions(paths, ast.FunctionDef | ast.AsyncFunctionDef, FUNCTION_LIMIT) == []


def test_the_run_directory_classes_are_short():
    paths = sorted((PACKAGE / "engine" / "rundir").glob("*.py"))
    assert len(paths) >= 3
    assert long_definitions(paths, ast.ClassDef, CLASS_LIMIT) == []


def test_every_module_is_under_the_file_limit():
    long = [f"{p.relative_to(PACKAGE)} ({n} lines)" for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > FILE_LIMIT]
    assert long == []


def test_every_config_key_is_classified_for_stacked_training():
    """A new config key must say how stacked runs treat it, or stacked runs would silently ignore it."""
    from gdsoftmax.engine.config.schema import ExperimentConfig
    from gdsoftmax.engine.loop.stacked import PER_RUN_KEYS, SHARED_KEYS, TRAIN_ALONE_WHEN

    def leaves(cls, prefix=""):
        for name, hint in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                yield from leaves(hint, f"{prefix}{name}.")
            else:
                yield prefix + name

    keys = set(leaves(ExperimentConfig))
    classified = set(PER_RUN_KEYS) | set(SHARED_KEYS) | set(TRAIN_ALONE_WHEN)
    assert "train.epochs" in keys
    assert "loss.beta" in keys
    assert sorted(keys - classified) == [], "classify the new key in gdsoftmax/engine/loop/stacked.py"
    assert sorted(classified - keys) == [], "a classified key no longer exists"
    assert not set(PER_RUN_KEYS) & set(SHARED_KEYS)


@pytest.mark.parametrize(("override", "reason"), [
    ({"loss": {"name": "focal"}}, "loss.name"),
    ({"loss": {"beta": {"kind": "pid"}}}, "loss.beta"),
    ({"loss": {"label_smoothing": 0.1}}, "loss.label_smoothing"),
    ({"loss": {"backend": "composite"}}, "loss.backend"),
    ({"data": {"augment": True}}, "data.augment"),
    ({"train": {"track_margin": True}}, "train.track_margin"),
])
def test_each_reason_to_train_alone_applies(override, reason):
    from gdsoftmax.engine.config.schema import parse_config
    from gdsoftmax.engine.loop.stacked import reasons_to_train_alone, stacking_key

    config = parse_config(override)
    assert [r.split(":")[0] for r in reasons_to_train_alone(config)] == [reason]
    assert stacking_key(config) is None
    assert reasons_to_train_alone(parse_config({})) == []


BLOCK_EXTRAS = textwrap.dedent("""
    import importlib.abc, sys
    EXTRAS = {"torchvision", "sklearn", "scipy", "matplotlib", "tqdm", "tomli_w", "PIL"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in EXTRAS:
                raise ImportError(f"{name} is an extra and is not installed here")
    sys.meta_path.insert(0, Block())
""")


def test_the_loss_runs_without_the_experiment_extras():
    code = BLOCK_EXTRAS + textwrap.dedent("""
        import doctest, torch, gdsoftmax
        import gdsoftmax.loss.functional as functional
        z, t = torch.randn(6, 5, requires_grad=True), torch.randint(5, (6,))
        for backend in ("auto", "composite", "fused"):
            gdsoftmax.gradient_decay_loss(z, t, 0.1, backend=backend).backward()
        gdsoftmax.GradientDecayLoss(0.1)(z, t)
        assert doctest.testmod(functional).failed == 0
        from gdsoftmax.cli import main
        assert main(["theory"]) == 0
        assert main(["sweep", "configs/digits_sweep.toml"]) == 2  # one line naming the extras
        try:
            import gdsoftmax.engine.loop.trainer
        except ImportError:
            print("engine needs the extras")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "engine needs the extras" in out.stdout
    assert "pip install 'gdsoftmax[experiments]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_trackers_a_config_accepts_are_the_registry():
    """A tracker is one module and one registry entry; the config's list of names must follow the registry."""
    from gdsoftmax.engine.config.checks import LOGGERS
    from gdsoftmax.engine.tracking.registry import TRACKERS

    assert sorted(LOGGERS) == sorted(TRACKERS)


def test_the_layer_order_is_stated_as_layers_states_it():
    """The package docstring and docs/architecture.md name the layers in LAYERS' order."""
    import gdsoftmax

    named = [m for m in re.findall(r":mod:`gdsoftmax\.(\w+)`", gdsoftmax.__doc__) if m in LAYERS]
    assert named == LAYERS[:-1]
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = doc[doc.index("```text"):doc.index("```", doc.index("```text") + 3)]
    listed = [m for m in re.findall(r"^  (\w+)/", tree, re.M) if m in LAYERS]
    assert listed == LAYERS[:-1]


def _folder_blocks(tree: str) -> dict[str, str]:
    """The text of each folder's entry in the doc's tree (its line and the more indented lines under it)."""
    blocks, current = {}, None
    for line in tree.splitlines():
        folder = re.match(r"^(\s+)(\w+)/", line)
        if folder:
            current = folder.group(2)
            blocks[current] = line
        elif current is not None:
            blocks[current] += "\n" + line
    return blocks


def test_docs_architecture_names_every_module_in_its_folder():
    """Every module is named in its own folder's entry of the tree (engine/config/checks.py under config/)."""
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = doc[doc.index("```text"):doc.index("```", doc.index("```text") + 3)]
    blocks = _folder_blocks(tree)
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        folder = path.parent.name if path.parent != PACKAGE else None
        text = blocks.get(folder, "") if folder else tree
        if not re.search(rf"\b{re.escape(path.stem)}\b", text):
            missing.append(str(path.relative_to(PACKAGE)))
    assert not missing, f"docs/architecture.md does not name these in their folder's entry: {', '.join(missing)}"
    assert "checks" not in blocks["models"]  # the check is per folder: a name elsewhere does not count

"""The import-layer contract: each folder of valueprobe_jax is a layer and imports only from layers
below it (function-level imports included), so the engine never reaches into sweeps and no library
module reaches into the CLI; analysis reads results, not the model stack."""

from __future__ import annotations

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "valueprobe_jax"
ANALYSIS = PKG.parent / "analysis"

# lower number = lower layer; a module may import its own layer and any lower one
LAYERS = {
    "errors": 0, "io": 0, "compile_cache": 0, "vocabulary": 0, "xla_flags": 0,
    "data": 1, "models": 1,
    "parallel": 2,
    "engine": 3,
    "probing": 4,
    "experiments": 5, "bench": 5, "lmeval": 5,
    "synthesis": 6, "analysis": 6,
    "cli": 7,
}
# analysis reads the result rows: never the model stack
ANALYSIS_FORBIDDEN = {"models", "parallel", "engine", "experiments.runner", "experiments.sweep"}


def _layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "valueprobe_jax", module
    return parts[1] if len(parts) > 1 else ""


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        yield ".".join(rel.parts), path
    for path in sorted(ANALYSIS.rglob("*.py")):
        yield "valueprobe_jax.analysis." + path.stem, path


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "valueprobe_jax":
                yield from (f"valueprobe_jax.{a.name}" for a in node.names)
            elif node.module.startswith("valueprobe_jax."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("valueprobe_jax"))


def test_every_folder_has_a_layer():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    files = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    assert folders | files | {"analysis"} == set(LAYERS), sorted((folders | files) ^ set(LAYERS))


def test_no_module_imports_a_higher_layer():
    bad = []
    for module, path in _modules():
        layer = _layer_of(module)
        if layer in ("", "__init__"):
            continue  # the package's lazy public API names every layer on purpose
        for target in _imports(path):
            t_layer = _layer_of(target)
            if t_layer and LAYERS[t_layer] > LAYERS[layer]:
                bad.append(f"{module} ({layer}) imports {target} ({t_layer})")
    assert not bad, "\n".join(bad)


def test_analysis_reads_results_not_the_model_stack():
    bad = []
    for module, path in _modules():
        if _layer_of(module) != "analysis":
            continue
        for target in _imports(path):
            rest = target.split(".", 1)[1] if "." in target else ""
            if any(rest == f or rest.startswith(f + ".") for f in ANALYSIS_FORBIDDEN):
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_top_level_analysis_package_is_installed():
    import importlib.util

    import valueprobe_jax.analysis

    assert pathlib.Path(valueprobe_jax.analysis.__file__).parent == ANALYSIS
    spec = importlib.util.find_spec("analysis")
    # only the repository root on sys.path (pytest's rootdir) could expose it, never the install
    assert spec is None or pathlib.Path(spec.origin).parent == ANALYSIS

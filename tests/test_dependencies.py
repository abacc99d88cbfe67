"""Every package the code imports is declared in pyproject.toml, in the extra that installs it
where it runs, and the README's commands install those extras. `.ci/run` then runs the README's
test command in a fresh virtual environment, so nothing installed by hand can stand in for a
missing declaration; this test names the missing one before the suite trips over it."""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# our packages, and the held-out renderers (tools/renderers/*.py, imported by module name)
OURS = {"host", "edge", "protocol", "tests"} | {
    p.stem for p in (ROOT / "tools" / "renderers").glob("*.py")
}
# Imported only on a Raspberry Pi, where Raspberry Pi OS ships it with apt (libcamera's Python
# binding cannot be built by pip); the adapter says so when it is missing.
ONLY_ON_A_PI = {"picamera2", "libcamera"}  # python3-picamera2 brings python3-libcamera


def python_files(folder: str):
    for path in sorted((ROOT / folder).rglob("*")):
        if path.suffix == ".py":
            yield path
        elif folder == "tools" and path.is_file() and not path.suffix:
            with open(path, "rb") as f:
                if f.readline().startswith(b"#!/usr/bin/env python"):
                    yield path


def third_party_imports(folder: str) -> dict:
    """{top-level module: first file importing it} for the imports outside the stdlib and ours."""
    found = {}
    for path in python_files(folder):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(module: str) -> str:
    """The distribution that provides `module` here (its own name when it is not installed)."""
    dists = importlib.metadata.packages_distributions().get(module, [module])
    return normalised(dists[0])


def declared(extras: list) -> set:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return {normalised(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in reqs}


def readme_commands() -> list:
    """The set-up commands the README starts with (its first ```sh block)."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return block.strip().splitlines()


def extras_of(command: str) -> list:
    return re.search(r"pip install -e '\.\[([a-z,]+)\]'", command).group(1).split(",")


def undeclared(imports: dict, extras: list) -> list:
    have = declared(extras)
    return [
        "%s (imported by %s)" % (module, where)
        for module, where in sorted(imports.items())
        if module not in ONLY_ON_A_PI and distribution(module) not in have
    ]


def test_the_readme_starts_with_the_demo_and_the_test_command():
    demo, tests = readme_commands()
    assert demo.endswith("&& binsort demo") and "pip install -e" in demo
    assert tests.endswith("&& tools/setup-system && python3 -m pytest -n 2")


def test_what_the_edge_imports_is_in_the_extra_a_pi_installs():
    assert undeclared(third_party_imports("edge"), ["edge"]) == []


def test_what_the_demo_imports_is_in_the_extras_its_command_installs():
    extras = extras_of(readme_commands()[0])
    imports = {}
    for folder in ("host", "edge", "protocol"):
        imports.update(third_party_imports(folder))
    assert undeclared(imports, extras) == []


def test_what_tests_and_tools_import_is_in_the_extras_the_test_command_installs():
    extras = extras_of(readme_commands()[1])
    imports = {}
    for folder in ("host", "edge", "protocol", "tests", "tools"):
        imports.update(third_party_imports(folder))
    assert undeclared(imports, extras) == []


def test_ci_runs_the_readme_test_command_in_a_fresh_virtual_environment():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-m venv --clear" in ci and "README.md" in ci


def module_file(name: str) -> "pathlib.Path | None":
    """The file of one of our modules by dotted name, or None when it is not one of ours."""
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_the_micropython_manifest_holds_every_module_its_files_import_and_nothing_else():
    """edge/portable/manifest.txt is what tools/micropython.mjs loads: a portable module that
    imports one of ours not listed would fail only under MicroPython, and a file listed that
    imports numpy could never run there."""
    listed = [
        line.strip()
        for line in (ROOT / "edge" / "portable" / "manifest.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "edge/portable/engine.py" in listed and "protocol/bnn.py" in listed
    needed = set()
    for rel in listed:
        path = ROOT / rel
        assert path.exists(), rel
        parent = path.parent
        while parent != ROOT:  # a package's __init__ runs before its modules
            needed.add(str((parent / "__init__.py").relative_to(ROOT)))
            parent = parent.parent
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module] + [node.module + "." + a.name for a in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("numpy", "torch", "PIL"), (rel, name)
                found = module_file(name)
                if found is not None:
                    needed.add(str(found.relative_to(ROOT)))
    assert needed <= set(listed), sorted(needed - set(listed))

"""Run a subprocess as if some packages were not installed, whatever this machine has.

Each hidden package is shadowed by one whose import raises ModuleNotFoundError, placed on
PYTHONPATH ahead of site-packages: `import gpiozero` fails there exactly as on a machine
without it, and the code's own "not installed" path runs.
"""

import os


def env_without(tmp_path, *packages: str) -> dict:
    """os.environ plus a PYTHONPATH under which `packages` cannot be imported."""
    shadow = tmp_path / "hidden-packages"
    for name in packages:
        (shadow / name).mkdir(parents=True, exist_ok=True)
        (shadow / name / "__init__.py").write_text(
            "raise ModuleNotFoundError(%r, name=%r)\n"
            % ("No module named %r (hidden by the test)" % name, name)
        )
    path = [str(shadow)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))

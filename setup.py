"""The optional native kernel (edge/engine/xnor_kernel.c). Everything else is in pyproject.toml.

optional=True: where no C compiler works, pip installs binsort without it and the edge uses
its numpy engine (edge/engine/native.py says which engine runs).
"""

import platform

from setuptools import Extension, setup

flags = ["-O3", "-std=c99"]
if platform.machine().lower() in ("x86_64", "amd64"):
    flags.append("-mpopcnt")  # every x86-64 CPU since 2008; the builtin becomes one instruction

setup(
    ext_modules=[
        Extension(
            "edge.engine._xnor",
            ["edge/engine/xnor_kernel.c"],
            depends=["edge/engine/xnor_kernel.h"],
            define_macros=[("BINSORT_PYTHON_MODULE", "1"), ("BINSORT_THREADS", "1")],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)

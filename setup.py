"""Declares the compiled journal only; metadata lives in pyproject.toml.

A failed compile fails the install, saying what to do: no silent fallback.
``DURABLY_NO_EXTENSIONS=1 pip install .`` builds the pure-Python package on
purpose (no Cython, no compiler) and marks it ``durably/journal/PURE_BUILD``,
so that it runs the pure-Python journal with no variable set at run time.
"""

import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

PURE = bool(os.environ.get("DURABLY_NO_EXTENSIONS"))


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        marker = Path(self.build_lib, "durably", "journal", "PURE_BUILD")
        if PURE:
            marker.write_text("built with DURABLY_NO_EXTENSIONS=1\n")
        else:
            marker.unlink(missing_ok=True)


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError) as exc:
            raise CompileError(
                f"durably's compiled journal ({ext.name}) did not build: {str(exc).rstrip('.')}. It needs a C "
                "compiler and Python's headers; without them, build the pure-Python journal on purpose: "
                "DURABLY_NO_EXTENSIONS=1 pip install durably (or .)"
            ) from exc


def extensions() -> list[Extension]:
    if PURE:
        return []
    from Cython.Build import cythonize

    ext = Extension("durably.journal._journal_c", ["csrc/_journal.pyx"])
    return cythonize([ext], compiler_directives={"language_level": "3"}, annotate=False)


setup(ext_modules=extensions(), cmdclass={"build_py": BuildPy, "build_ext": BuildExt})

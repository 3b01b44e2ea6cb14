"""Declares the compiled journal only; metadata lives in pyproject.toml.

A failed compile fails the install: there is no silent fallback to the
pure-Python twin. A machine without a C compiler builds the pure-Python
package on purpose: ``DURABLY_NO_EXTENSIONS=1 pip install .`` compiles
nothing (Cython is not even imported) and marks the package as built so
(``durably/journal/PURE_BUILD``), so that it then runs the pure-Python
journal without the variable being set at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

PURE = bool(os.environ.get("DURABLY_NO_EXTENSIONS"))
MARKER = Path("durably", "journal", "PURE_BUILD")


class BuildPy(build_py):
    """Copies the sources, then writes (or removes) the pure-build marker."""

    def run(self) -> None:
        super().run()
        marker = Path(self.build_lib) / MARKER
        if PURE:
            marker.write_text("built with DURABLY_NO_EXTENSIONS=1: no compiled journal\n")
        else:
            marker.unlink(missing_ok=True)


class BuildExt(build_ext):
    """Compiles the journal; a failure still fails the build, saying what to do."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError) as exc:
            raise CompileError(
                f"durably's compiled journal ({ext.name}) did not build: {str(exc).rstrip('.')}. It needs a C "
                "compiler (and Python's headers). On a machine without one, build the pure-Python "
                "journal on purpose: DURABLY_NO_EXTENSIONS=1 pip install durably (or .)"
            ) from exc


def extensions() -> list[Extension]:
    if PURE:
        return []
    from Cython.Build import cythonize

    return cythonize(
        [Extension("durably.journal._journal_c", ["csrc/_journal.pyx"])],
        compiler_directives={"language_level": "3"},
        annotate=False,
    )


setup(ext_modules=extensions(), cmdclass={"build_py": BuildPy, "build_ext": BuildExt})

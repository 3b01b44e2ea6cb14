"""Declares the compiled journal only; metadata lives in pyproject.toml.

A failed compile fails the install: there is no silent fallback to the
pure-Python twin (select it explicitly with DURABLY_NO_EXTENSIONS=1).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("durably.journal._journal_c", ["csrc/_journal.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        annotate=False,
    ),
)

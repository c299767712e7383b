"""Build hook: cythonize the core unless SKIP_CYTHON=1 (REQUIRE_CYTHON=1 makes a failed compile fatal)."""

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

TO_CYTHONIZE = ["bmsgw/core/_kernel.py", "bmsgw/core/_health.py"]


class OptionalBuildExt(build_ext):
    """Fall back to the pure-Python core when compiling fails, unless REQUIRE_CYTHON is set."""

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            if os.environ.get("REQUIRE_CYTHON"):
                raise
            print("bmsgw: compiling the core failed; installing the pure-Python core")

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception:
            if os.environ.get("REQUIRE_CYTHON"):
                raise
            print(f"bmsgw: compiling {ext.name} failed; it stays pure Python")


def extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("SKIP_CYTHON"):
        return []
    from Cython.Build import cythonize

    return cythonize(
        TO_CYTHONIZE,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""Developer helpers: load the pure-Python kernel by path, or compile the kernel into a scratch directory.

Used by the parity tests and ``bench/core.py`` so both variants of the *same* ``_kernel.py`` can run side by
side in one process without touching the installed package (no ``.so`` is ever written next to the
sources). Not used at run time by the gateway.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
KERNEL_PY = _HERE / "_kernel.py"
KERNEL_PXD = _HERE / "_kernel.pxd"
HEALTH_PY = _HERE / "_health.py"
HEALTH_PXD = _HERE / "_health.pxd"


class BuildUnavailableError(RuntimeError):
    """Cython or a C compiler is missing; the message says which."""


class KernelBuildError(RuntimeError):
    """The toolchain is there but compiling the kernel failed (a bug, not an environment problem)."""


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_pure_kernel(name: str = "_bmsgw_kernel_pure") -> ModuleType:
    """The kernel's ``.py`` executed as plain Python under module name `name` (never the extension)."""
    return _load(name, KERNEL_PY)


def load_pure_health(name: str = "_bmsgw_health_pure") -> ModuleType:
    """The health module's ``.py`` executed as plain Python under module name `name`."""
    return _load(name, HEALTH_PY)


def build_compiled_health(cache_dir: Path | None = None, name: str = "_bmsgw_health_c") -> ModuleType:
    """Like :func:`build_compiled_kernel`, for ``_health.py`` + ``_health.pxd``."""
    return build_compiled_kernel(cache_dir, name, source=(HEALTH_PY, HEALTH_PXD))


def _digest(source: tuple[Path, Path] = (KERNEL_PY, KERNEL_PXD)) -> str:
    h = hashlib.sha256()
    for p in source:
        h.update(p.read_bytes())
    h.update(sys.version.encode())
    h.update(importlib.metadata.version("Cython").encode())
    return h.hexdigest()[:16]


def build_compiled_kernel(
    cache_dir: Path | None = None,
    name: str = "_bmsgw_kernel_c",
    source: tuple[Path, Path] = (KERNEL_PY, KERNEL_PXD),
) -> ModuleType:
    """Cythonize + compile the kernel (or the module `source` = its .py and .pxd; each with its own
    ``# cython:`` directives) into a scratch directory and import it as `name`. The build is cached per
    source hash under `cache_dir` (default: the temp dir).

    Raises :class:`BuildUnavailableError` when Cython or a C compiler is not available and
    :class:`KernelBuildError` when they are but the build fails.
    """
    if importlib.util.find_spec("Cython") is None:
        raise BuildUnavailableError("Cython is not installed")
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise BuildUnavailableError(f"no C compiler ({cc}) on PATH")

    stem = source[0].stem.lstrip("_")
    root = (cache_dir or Path(tempfile.gettempdir())) / f"bmsgw-{stem}-{_digest(source)}"
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = root / f"{name}{suffix}"
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
        shutil.copyfile(source[0], work / f"{name}.py")
        shutil.copyfile(source[1], work / f"{name}.pxd")
        cmd = [
            sys.executable,
            "-c",
            "import sys; from Cython.Build.Cythonize import main; sys.exit(main())",
            "-i",
            "-q",
            f"{name}.py",
        ]
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        built = work / f"{name}{suffix}"
        if res.returncode != 0 or not built.exists():
            raise KernelBuildError(f"compiling the kernel failed:\n{res.stdout}\n{res.stderr}")
        os.replace(built, target)  # atomic: concurrent builders race harmlessly
        shutil.rmtree(work, ignore_errors=True)
    return _load(name, target)

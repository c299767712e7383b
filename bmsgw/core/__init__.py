"""Compiled estimation & protection core (SOC, protection, limits). No I/O, no clock: time is passed in.

``IS_COMPILED`` says whether the Cython builds of the kernel and the health module are in use
(``bmsgw --version`` shows it).
"""

from bmsgw.core import _health, _kernel
from bmsgw.core.core import Core, CoreOutput, CoreParams, PackOutput

IS_COMPILED: bool = not _kernel.__file__.endswith(".py") and not _health.__file__.endswith(".py")

__all__ = ["IS_COMPILED", "Core", "CoreOutput", "CoreParams", "PackOutput"]

"""The garbage collector and a process's start-up objects.

A gateway process holds about 100,000 objects from its start (modules, models and
their schemas, the plugin manager, the open workspace) that live as long as it does.
Python's collector walks them again at every full collection, which the work of a
busy process (placements, deliveries, callbacks) sets off over and over.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what start-up left behind, then take every object made so far out of the
    collector's generations for good (`gc.freeze`): later collections walk only what
    the process's work made. Called once by the commands that run long or work in bulk
    (``serve``, ``dispatch``, ``place``), once their workspace is open: about 28 µs less
    CPU a placement (`bench/outbound.py`, which does the same). A start-up object that
    becomes garbage later is not freed; that is bounded by what start-up made."""
    gc.collect()
    gc.freeze()

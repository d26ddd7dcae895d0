"""The garbage collector and a process's start-up objects.

A gateway process holds about 100,000 objects from its start (modules, models and
their schemas, the plugin manager, the open workspace) that live as long as it does.
Python's collector walks them again at every full collection, which the work of a
busy process (placements, deliveries, callbacks) sets off over and over.

The work itself makes many short-lived containers (a placement's rows, claims and
audit entry; a delivery's request), nearly all freed by reference counting as soon as
they are done with. With the collector's default threshold (a young collection every
700 more containers made than freed), 3,000 placements and their deliveries ran about
145 young collections, 13 of the middle generation and a full one: 7.5 µs of CPU a
package end to end (`bench/outbound.py`, timed with `gc.callbacks`). Young collections
come every `YOUNG` containers instead: none in the same run.
"""

from __future__ import annotations

import gc

#: Containers made (less those freed) between two young collections, once settled. A
#: reference cycle made by the work is still collected, a little later: one of up to
#: that many containers (a few megabytes at most) waits for the next collection.
YOUNG = 10_000


def settle() -> None:
    """Collect what start-up left behind, then take every object made so far out of the
    collector's generations for good (`gc.freeze`): later collections walk only what
    the process's work made, and young ones come every `YOUNG` containers. Called once
    by the commands that run long or work in bulk (``serve``, ``dispatch``, ``place``),
    once their workspace is open: about 28 µs less CPU a placement for the freeze
    (`bench/outbound.py`, which does the same), 7.5 µs less a package end to end for the
    threshold. A start-up object that becomes garbage later is not freed; that is
    bounded by what start-up made."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)

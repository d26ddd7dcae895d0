"""A long-running command's start-up objects leave the collector's generations once
(`gateway.heap.settle`); what its work makes afterwards is collected as before."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, weakref
from gateway import heap
from gateway.core import Gateway  # start-up: modules, models, their schemas

class Node:
    pass

left_over = Node(); left_over.me = left_over; gone = weakref.ref(left_over); del left_over
heap.settle()
assert gone() is None, "garbage start-up left behind is collected, not frozen"
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen
later = Node(); later.me = later; dropped = weakref.ref(later); del later
gc.collect()
assert dropped() is None, "a cycle made after settling is still collected"
print(frozen)
"""


def test_start_up_objects_are_set_aside_and_later_garbage_still_goes() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10_000

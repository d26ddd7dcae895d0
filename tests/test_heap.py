"""A long-running command's start-up objects leave the collector's generations once
(`gateway.heap.settle`); what its work makes afterwards is still collected, by young
collections every `heap.YOUNG` containers."""

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
assert gc.get_threshold()[0] == heap.YOUNG
later = Node(); later.me = later; dropped = weakref.ref(later); del later
kept = [[] for _ in range(heap.YOUNG // 2)]
assert dropped() is not None, "young collections come less often than by default"
kept += [[] for _ in range(heap.YOUNG)]
assert dropped() is None, "a cycle made after settling is still collected, by itself"
print(frozen)
"""


def test_start_up_objects_are_set_aside_and_later_garbage_still_goes() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10_000

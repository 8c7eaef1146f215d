"""Once the roles are up, the objects of start-up leave the collector's generations (a
full collection then walks only what the work allocates), and the young generation is
collected rarely enough that the hot paths do not pay for walking their in-flight
objects over and over."""

from __future__ import annotations

import gc
import weakref

from triggerd.gctune import YOUNG_THRESHOLD, settle_after_startup


def test_startup_objects_are_frozen_out_of_full_collections() -> None:
    threshold = gc.get_threshold()
    try:
        settle_after_startup()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, classes and functions loaded
        assert len(gc.get_objects(generation=2)) < frozen / 100
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_is_still_collected() -> None:
    threshold = gc.get_threshold()
    try:
        settle_after_startup()

        class Node:
            def __init__(self) -> None:
                self.me = self

        first = Node()
        gone = weakref.ref(first)
        del first
        for _ in range(3 * YOUNG_THRESHOLD):  # more cycles, each only the collector frees
            Node()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

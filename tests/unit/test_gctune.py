"""Once the roles are up, the objects of start-up leave the collector's generations (a
full collection then walks only what the work allocates)."""

from __future__ import annotations

import gc

from triggerd.gctune import settle_after_startup


def test_startup_objects_are_frozen_out_of_full_collections() -> None:
    try:
        settle_after_startup()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, classes and functions loaded
        assert len(gc.get_objects(generation=2)) < frozen / 100
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0

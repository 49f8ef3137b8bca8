"""Between components the runner returns memory to the OS (pipeline/memory.py)."""
import gc
import weakref

import psutil
import pytest
from apache_beam.utils import shared

from scarfx.pipeline.memory import _malloc_trim, release_freed_memory
from scarfx.pipeline.progress import ComponentProgress


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_freed_heap_goes_back_to_the_os():
    process = psutil.Process()
    blocks = [bytearray(8192) for _ in range(25_000)]  # 200 MB of malloc'd (not mmap'd) chunks
    pin = bytearray(8192)  # keeps the heap's top in use, so glibc cannot shrink it by itself
    held = process.memory_info().rss
    del blocks
    before_trim = process.memory_info().rss
    assert release_freed_memory()
    after_trim = process.memory_info().rss
    assert held - after_trim > 150 * 2**20, (held, before_trim, after_trim)
    assert before_trim - after_trim > 100 * 2**20
    del pin


def test_beams_keepalive_reference_is_dropped():
    class Model:
        pass

    handle = shared.Shared()
    model = handle.acquire(Model)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is not None  # Beam's shared map still holds it (what the runner drops)
    release_freed_memory()
    assert alive() is None


def test_the_progress_observer_calls_back_after_each_finished_node():
    finished = []
    observer = ComponentProgress(on_finished=finished.append)
    observer.observe("Component CsvExampleGen is running.")
    observer.observe("Component CsvExampleGen is finished.")
    observer.observe("node Trainer is running.")
    observer.observe("A cached execution 7 is used.")
    observer.observe("node Trainer is finished.")
    assert finished == ["CsvExampleGen", "Trainer"]

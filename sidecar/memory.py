"""Memory over a burst of work: no garbage collection while a big request is in flight, and
freed memory given back to the operating system once the burst is over.

A 5,000-task createMany parses, announces and answers thousands of dicts at once. Python frees
them, but glibc's malloc keeps the pages (in every thread's arena), so the resident size stays at
the burst's high-water mark: measured +40-50 % after 100,000 tasks. ``malloc_trim(0)`` returns the
free pages of all arenas. Elsewhere (macOS, Windows, musl) this does nothing.

Even so, Python's own small-object allocator (pymalloc) hands memory back only in whole 1 MiB
arenas, and a few long-lived objects made during a burst keep some of them each (measured: +16-18 %
RSS after 100,000 tasks, 5-6 arenas holding almost nothing). On glibc the sidecar therefore
allocates new objects with malloc, as ``PYTHONMALLOC=malloc`` would, so the trim returns every free
page (:func:`allocate_objects_with_malloc`).

The collector itself is tuned for bursts of requests (:func:`collect_less_often`,
:func:`freeze_start_up_objects`).

A 5,000-task createMany also allocates some 30,000 containers that all stay alive until its
response and announcements are written. Python's collector, counting those allocations, ran a
full collection in most such requests: 15-30 ms of traversing objects that were never garbage
(about a fifth of the request). Refcounting frees them when they are written; the collector is
paused for that span (:func:`pause_collection`) and runs as usual afterwards.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # the symbols already loaded into the process (libc among them): ctypes.util.find_library
        # would run /sbin/ldconfig in a subprocess to find the same library
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Collect cyclic garbage, then return freed heap pages to the OS where the C library can;
    True if it could."""
    gc.collect()
    malloc_trim = find_malloc_trim()
    if malloc_trim is None:
        return False
    released = malloc_trim(0)
    log.debug("malloc_trim: %s", "memory returned" if released else "nothing to return")
    return True


class _Allocator(ctypes.Structure):
    """CPython's PyMemAllocatorEx."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("ctx", "malloc", "calloc", "realloc", "free")]


_RAW, _MEM, _OBJ = 0, 1, 2  # PyMemAllocatorDomain


def allocate_objects_with_malloc() -> bool:
    """From now on, allocate Python objects and buffers with the C library's malloc; True if done.

    What ``PYTHONMALLOC=malloc`` does at start-up, done here at run time because a frozen build
    ignores that variable (PyInstaller's bootloader reads no ``PYTHON*`` variables). New blocks come
    from the raw allocator (malloc); freeing and resizing keep pymalloc's functions, which hand a
    block that is not theirs to the raw allocator (CPython relies on that for every block over
    512 bytes), so the blocks allocated before the switch stay valid. Done only on glibc (where
    malloc_trim returns the pages) and when the allocator is pymalloc itself: not under debug
    hooks (``-X dev``) or tracemalloc, whose headers the raw allocator would not write, and not
    when ``PYTHONMALLOC`` chose an allocator (``PYTHONMALLOC=pymalloc`` keeps pymalloc: ~17 % more
    one-call-per-task creates a second, ~3 % faster drain, measured; ``malloc`` in a frozen build
    switches, as the bootloader ignored it). Call it before other threads start.
    """
    import os

    import _tracemalloc  # the built-in half of tracemalloc: the module would import pickle

    if find_malloc_trim() is None or sys.flags.dev_mode or _tracemalloc.is_tracing():
        return False
    # pymalloc's free and realloc accepting blocks of the raw allocator is what makes the switch
    # safe: so in the CPython versions it was checked in, and never in a free-threaded build
    # (mimalloc's free would be handed malloc's blocks)
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return False
    if sys.version_info >= (3, 13):  # free-threaded builds exist from 3.13 on
        import sysconfig  # ~1 ms at start-up: only where the answer can be yes

        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            return False
    asked = os.environ.get("PYTHONMALLOC")
    if asked is not None and not (asked == "malloc" and getattr(sys, "frozen", False)):
        return False  # an allocator was chosen, and the interpreter (not frozen) started with it
    api = ctypes.pythonapi
    get, set_ = api.PyMem_GetAllocator, api.PyMem_SetAllocator
    for function in (get, set_):
        function.argtypes = [ctypes.c_int, ctypes.POINTER(_Allocator)]
        function.restype = None
    raw = _Allocator()
    get(_RAW, ctypes.byref(raw))
    for domain in (_MEM, _OBJ):
        current = _Allocator()
        get(domain, ctypes.byref(current))
        set_(domain, ctypes.byref(_Allocator(None, raw.malloc, raw.calloc, current.realloc, current.free)))
    return True


YOUNG_COLLECTION_EVERY = 10_000  # container allocations (net); Python's default is 700


def collect_less_often() -> None:
    """Run the youngest collection after 10,000 net container allocations instead of 700.

    In a burst of small requests (5,000 pipelined tasks.create) the objects of the requests in
    flight are alive, so each young collection traverses them again and promotes them, and the
    older ones follow: 2,163 + 195 + 11 collections took 1.4 s of a 3.6 s burst (gc.callbacks;
    perf put gc_collect_main at 27 % of the sidecar's CPU). At 10,000, 222 + 20 + 1 took 0.5 s.
    What only the collector can free (reference cycles) would wait longer, but the sidecar's own
    paths make none (tests/blackbox/test_memory.py checks); a young collection traverses at most
    ~10,000 objects.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, older, oldest)


def freeze_start_up_objects() -> None:
    """Move what start-up made (modules, functions, classes, compiled schemas: ~37,000 tracked
    objects) out of the collector's sight: they live as long as the process, and every full
    collection traversed them all."""
    gc.freeze()


_pause_lock = threading.Lock()
_pauses = 0
_disabled_by_pause = False


def pause_collection() -> Callable[[], None]:
    """Stop automatic garbage collection until the returned function is called (once is enough;
    later calls do nothing). Pauses nest, from any thread: collection resumes when the last one
    ends, and only if a pause was what stopped it."""
    global _pauses, _disabled_by_pause
    with _pause_lock:
        _pauses += 1
        if _pauses == 1 and gc.isenabled():
            gc.disable()
            _disabled_by_pause = True
    ended = False

    def resume() -> None:
        global _pauses, _disabled_by_pause
        nonlocal ended
        with _pause_lock:
            if ended:
                return
            ended = True
            _pauses -= 1
            if _pauses == 0 and _disabled_by_pause:
                _disabled_by_pause = False
                gc.enable()

    return resume

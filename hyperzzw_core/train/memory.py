"""The training process's heap: keep freed memory for reuse (glibc), a setting of the application.

A CPU training step allocates and frees the same large activations and gradients on every step.
With glibc's defaults, blocks above its mmap threshold (at most 32 MiB) are mapped fresh on each
allocation and unmapped on free, and freed memory at the top of the heap is returned to the
system; either way the next step touches new pages, and the kernel zero-fills each on its first
touch. For the ``cifar10()`` step at B = 32 that is about 175,000 page faults, about 15% of the
step (docs/speed.md, "Sixth session"). PyTorch's own CPU allocator has no cache, so the usual
cure is a process-wide one: jemalloc or tcmalloc by ``LD_PRELOAD`` (what
``torch.backends.xeon.run_cpu`` sets up), or glibc's own settings. ``hyperzzw train`` applies
:func:`keep_freed_memory` to its process unless given ``--malloc system``; the library itself
never does (it would change every other allocation of the host program).
"""

from __future__ import annotations

import ctypes

# mallopt parameters of glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1
"""The largest value mallopt takes (an ``int``): about 2 GiB of free heap top is kept."""


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows has no process-wide handle
        return None
    if getattr(libc, "gnu_get_libc_version", None) is None or getattr(libc, "mallopt", None) is None:
        return None
    return libc


def keep_freed_memory() -> str | None:
    """Make glibc's malloc serve every allocation from its heap and keep freed memory for reuse.

    Calls ``mallopt(M_MMAP_MAX, 0)`` (no block is mapped on its own, so none is unmapped on free)
    and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` (the heap's free top is not returned to the
    system). Effect, measured on the ``cifar10()`` training step at B = 32 (float32, two
    threads): 175,000 page faults a step fall to under ten, the step takes 0.84x the time, and the
    peak resident memory rises by about 8% (the heap keeps what it once held). It applies to the
    whole process, from the call on.

    Returns a description of what was set ("glibc 2.36: ...") or None where the C library is not
    glibc (musl, macOS, Windows: nothing is changed). Raises ``RuntimeError`` if glibc refuses a
    setting.
    """
    libc = _glibc()
    if libc is None:
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    version = libc.gnu_get_libc_version().decode()
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    for name, param, value in (("M_MMAP_MAX", M_MMAP_MAX, 0), ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"glibc {version}: mallopt({name}, {value}) was refused")
    return f"glibc {version}: large blocks from the heap (M_MMAP_MAX 0), freed memory kept (M_TRIM_THRESHOLD 2 GiB)"

#!/usr/bin/env python3
"""Drops one file's pages from the page cache (after a sync), so the next exec reads it from
disk like a binary installed a while ago or after a reboot — the state runit's and s6's
binaries are in. A binary the linker has just written sits in the page cache as written
(large folios), and the kernel's fault-around then maps more of it into every process: the
same whisperd build measured 0.5 MiB more supervisor PSS and 0.7-1.9 MiB more worker RSS that
way (docs/performance.md). Only this file is touched; nothing else of the cache.
Usage: drop-binary-cache.py FILE..."""
import os
import sys

os.sync()
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

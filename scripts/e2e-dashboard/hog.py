#!/usr/bin/python3
"""A character for scripts/e2e-dashboard.sh that takes 160 MiB more memory (written, so it is
resident) each time it gets SIGUSR1 (two signals close together may count once)."""
import signal

held = []


def grow(*_):
    held.append(b"x" * (160 << 20))
    print(f"hog holds {len(held) * 160} MiB", flush=True)


signal.signal(signal.SIGUSR1, grow)
print("hog ready", flush=True)
while True:
    signal.pause()

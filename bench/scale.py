"""Scale: memory and time for 1,000 card images loaded at once; one image's save and load time."""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time

from common import machine


def _rss() -> int:
    """Resident memory of this process (tracemalloc would slow the loads it measures)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    from cardos import image
    from tests.ss import card

    c = card()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "card.json")
        save_ms, load_ms = [], []
        for _ in range(30):
            t0 = time.perf_counter()
            image.save(c, path)
            t1 = time.perf_counter()
            image.load(path)
            load_ms.append((time.perf_counter() - t1) * 1000)
            save_ms.append((t1 - t0) * 1000)
        size = os.path.getsize(path)
        paths = []
        for i in range(1000):
            p = os.path.join(tmp, f"c{i:04d}.json")
            with open(path, "rb") as src, open(p, "wb") as dst:
                dst.write(src.read())
            paths.append(p)
        gc.collect()
        rss0 = _rss()
        t0 = time.perf_counter()
        cards = [image.load(p) for p in paths]
        for x in cards:
            x.power_on()
        load_all = time.perf_counter() - t0
        gc.collect()
        current = _rss() - rss0
        assert all(x.transmit(bytes.fromhex("00A40000023F00"))[-2:] == b"\x90\x00" for x in cards)
    print(f"# scale ({machine()})")
    print(f"one card image: {size / 1024:.1f} KiB on disk")
    print(f"save one image (atomic, fsync)   {statistics.median(save_ms):8.2f} ms (min {min(save_ms):.2f}, max {max(save_ms):.2f})")
    print(f"load one image                   {statistics.median(load_ms):8.2f} ms (min {min(load_ms):.2f}, max {max(load_ms):.2f})")
    print(f"1,000 images loaded at once      {load_all:8.2f} s, {current / 2**20:.1f} MiB more resident memory "
          f"({current / 1000 / 1024:.1f} KiB per card)")


if __name__ == "__main__":
    main()

"""Scale: memory and time for 1,000 card images loaded at once; one image's save and load time."""

from __future__ import annotations

import gc
import os
import tempfile
import time

from results import Results


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
    out = Results("scale", "scale")
    out.add("image_kib", "one card image on disk", size / 1024, "KiB", higher_is_better=False)
    out.add("save_ms", "save one image (atomic, fsync)", save_ms, "ms", higher_is_better=False)
    out.add("load_ms", "load one image", load_ms, "ms", higher_is_better=False)
    out.add("load_1000_s", "1,000 images loaded at once", load_all, "s", higher_is_better=False)
    out.add("kib_per_card", "resident memory per loaded card", current / 1000 / 1024, "KiB", higher_is_better=False)
    out.save()

if __name__ == "__main__":
    main()

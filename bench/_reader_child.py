"""Run by bench/collect.py with a separate virtualenv holding lemon24's reader (the baseline).

Prints one JSON line: cold and warm seconds of ``update_feeds()`` over the given feed URLs.
"""

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from reader import make_reader


def main() -> None:
    urls = Path(sys.argv[1]).read_text().split()
    reps = int(sys.argv[2])
    cold, warm = [], []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            reader = make_reader(str(Path(tmp) / "reader.sqlite"))
            for url in urls:
                reader.add_feed(url)
            t = time.perf_counter()
            reader.update_feeds(scheduled=False)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            reader.update_feeds(scheduled=False)
            warm.append(time.perf_counter() - t)
            entries = reader.get_entry_counts().total
            reader.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cold": cold, "warm": warm, "entries": entries, "peak_mb": peak}))


if __name__ == "__main__":
    main()

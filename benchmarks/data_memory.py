"""Peak memory of loading a published-layout data set with mmalign-datasets, at 1k and 100k rows.

Generates RLAIF-V-layout parquet files (image bytes in ``{bytes, path}``
structs, question/chosen/rejected text) and measures, each in a fresh
process:

* ``index``: the first load (stream the parquet, validate every row, check
  every image header, write the canonical store) followed by 2,000 random
  ``pairs[i]`` with 200 images decoded, as training does;
* ``cached``: the same on a second load (the store is reused);
* ``full-pass``: a cached load, then every pair built once (text of every row
  touched; images not decoded);
* ``read_table``: the naive baseline, ``pyarrow.parquet.read_table`` of the
  whole file (what a hand conversion to a list or DataFrame starts from).

Peak RSS is ``VmHWM`` from ``/proc/self/status`` (``ru_maxrss`` is not used: it
keeps the parent's high-water mark across fork and exec). Peak anon is
``RssAnon`` polled every 2 ms: memory the process itself holds, without
file-backed pages (shared libraries, and any data file a reader maps).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/data_memory.py            # 1k and 100k rows
    OMP_NUM_THREADS=1 python benchmarks/data_memory.py --rows 1000 10000 100000 --trace --workdir /tmp/bench
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the a red blue green small large square circle left right image shows there is on of with near above below "
         "person car dog table window tree sky building street sign two three white black").split()


def generate(path: Path, rows: int, seed: int = 0, image_pool: int = 500, row_group: int = 1000) -> None:
    """An RLAIF-V-layout parquet file: 64x64 JPEG noise images (a pool, so generation is quick), ~100-word answers."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = random.Random(seed)
    pool = []
    for i in range(image_pool):
        im = Image.frombytes("RGB", (64, 64), bytes(rng.getrandbits(8) for _ in range(64 * 64 * 3)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        pool.append(buf.getvalue())
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("ds_name", pa.string()), ("image", image), ("question", pa.string()), ("chosen", pa.string()),
                        ("rejected", pa.string()), ("origin_dataset", pa.string()), ("origin_split", pa.string()),
                        ("idx", pa.string()), ("image_path", pa.string())])

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)) + "."

    with pq.ParquetWriter(str(path), schema, use_dictionary=False) as writer:
        for start in range(0, rows, row_group):
            batch = []
            for i in range(start, min(rows, start + row_group)):
                batch.append({"ds_name": "RLAIF-V", "image": {"bytes": pool[i % image_pool], "path": f"{i}.jpg"},
                              "question": text(15) + "?", "chosen": text(100), "rejected": text(100),
                              "origin_dataset": "bench", "origin_split": '{"model": "bench"}', "idx": str(i), "image_path": f"bench/{i}.jpg"})
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class _AnonPeak:
    """Polls RssAnon in a thread (there is no kernel high-water mark for anonymous memory alone)."""

    def __init__(self, every: float = 0.002):
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            self._stop.wait(self._every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _status("RssAnon"))


def measure(mode: str, path: Path, cache: Path) -> dict:
    """Run inside a fresh process: load and use the data set, report memory."""
    sampler = _AnonPeak()
    t0 = time.perf_counter()
    trace: list[tuple[int, float, float]] = []
    if mode == "trace":  # index only, sampling memory every 10k records through the source's progress hook
        from mmalign_core.protocols import Context
        from mmalign_datasets.config import RlaifVConfig
        from mmalign_datasets.loaders import RlaifVSource

        def progress(items, desc="", total=None):
            for i, item in enumerate(items):
                if i % 10_000 == 0:
                    trace.append((i, _status("RssAnon") / 2**20, _status("VmHWM") / 2**20))
                yield item

        source = RlaifVSource(RlaifVConfig(path=str(path)))
        n = source.store(Context(cache_dir=cache, log=lambda m: None, progress=progress)).n_rows
        trace.append((-1, _status("RssAnon") / 2**20, _status("VmHWM") / 2**20))
    elif mode == "read_table":
        import pyarrow.parquet as pq

        table = pq.read_table(str(path))
        n = table.num_rows
    else:
        from mmalign_core.protocols import Context
        from mmalign_datasets.config import RlaifVConfig
        from mmalign_datasets.loaders import RlaifVSource

        source = RlaifVSource(RlaifVConfig(path=str(path)))
        pairs = source.pairs(Context(cache_dir=cache, log=lambda m: None))
        n = len(pairs)
        rng = random.Random(0)
        if mode == "full-pass":
            for i in range(n):
                pairs[i]
        else:
            for k in range(2000):
                pair = pairs[rng.randrange(n)]
                if k % 10 == 0:
                    pair.images[0].load()
    seconds = time.perf_counter() - t0
    peak_anon = sampler.stop()
    if trace:
        return {"mode": mode, "rows": n, "trace": [(i, round(a), round(h)) for i, a, h in trace]}
    return {
        "mode": mode,
        "rows": n,
        "seconds": round(seconds, 2),
        # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's high-water mark across fork + exec
        "peak_rss_mb": round(_status("VmHWM") / 2**20, 1),
        "peak_anon_mb": round(peak_anon / 2**20, 1),
        "anon_mb": round(_status("RssAnon") / 2**20, 1),
        "file_mb": round(_status("RssFile") / 2**20, 1),
    }


def _child(mode: str, path: Path, cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(cache)], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline() -> dict:
    code = (
        "import mmalign_core.protocols, mmalign_datasets.loaders, pyarrow.parquet, PIL.Image\n"
        "from pathlib import Path\n"
        "st = dict(l.split(':', 1) for l in Path('/proc/self/status').read_text().splitlines() if ':' in l)\n"
        "print(int(st['VmHWM'].split()[0]) / 1024, int(st['RssAnon'].split()[0]) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"mode": "imports only", "peak_rss_mb": round(float(out[0]), 1), "anon_mb": round(float(out[1]), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--workdir", type=Path, default=None, help="where files go (default: a temporary folder, removed)")
    parser.add_argument("--trace", action="store_true", help="also trace memory every 10k rows while indexing the largest file")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path, cache = args.child
        print(json.dumps(measure(mode, Path(path), Path(cache))))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mmalign-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [baseline()]
    trace_lines = []
    try:
        for rows in args.rows:
            path = work / f"rlaif-v-{rows}.parquet"
            if not path.is_file():
                t0 = time.perf_counter()
                generate(path, rows)
                print(f"generated {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            cache = work / f"cache-{rows}"
            shutil.rmtree(cache, ignore_errors=True)
            for mode in ("index", "cached", "full-pass", "read_table"):
                r = _child(mode, path, cache)
                r["file_mib"] = round(path.stat().st_size / 2**20, 1)
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
            store = next(cache.rglob("pairs.arrow")).parent
            size = sum(f.stat().st_size for f in store.iterdir())
            results.append({"mode": "store size", "rows": rows, "file_mib": round(size / 2**20, 1)})
        if args.trace:
            rows = max(args.rows)
            cache = work / "cache-trace"
            shutil.rmtree(cache, ignore_errors=True)
            t = _child("trace", work / f"rlaif-v-{rows}.parquet", cache)["trace"]
            trace_lines = [
                f"indexing {rows} rows, MiB every 10k records:",
                "rows      " + "".join(f"{('end' if i < 0 else f'{i // 1000}k'):>7}" for i, _, _ in t),
                "RssAnon   " + "".join(f"{a:>7}" for _, a, _ in t),
                "VmHWM     " + "".join(f"{h:>7}" for _, _, h in t),
            ]
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    for line in trace_lines:
        print(line)
    print(f"{'mode':<14}{'rows':>8}{'file MiB':>10}{'seconds':>9}{'peak RSS MiB':>14}{'peak anon MiB':>15}{'end anon MiB':>14}{'end file-backed MiB':>21}")
    for r in results:
        print(f"{r['mode']:<14}{r.get('rows', ''):>8}{r.get('file_mib', ''):>10}{r.get('seconds', ''):>9}"
              f"{r.get('peak_rss_mb', ''):>14}{r.get('peak_anon_mb', ''):>15}{r.get('anon_mb', ''):>14}{r.get('file_mb', ''):>21}")


if __name__ == "__main__":
    main()

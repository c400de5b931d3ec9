"""Profile ``Producer.enqueue`` (B5's hot path) in-process with pyinstrument.

python -m benchmarks.profile_enqueue [--requests 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.harness import REQUEST, RedisProc, use_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/profile-enqueue.txt"))
    args = parser.parse_args(argv)
    from pyinstrument import Profiler

    workdir = Path(tempfile.mkdtemp(prefix="nbq-profile-enqueue-"))
    redis_proc = RedisProc(workdir)
    redis_proc.start()
    try:
        use_env({"NBQ_BROKER_URL": redis_proc.url, "NBQ_EVOLINK_API_KEY": "bench"})
        from nanobanana_queue.producers.api import Producer
        from nanobanana_queue.workers.settings import get_settings

        producer = Producer(get_settings())
        for _ in range(50):
            producer.enqueue(REQUEST)
        profiler = Profiler(interval=0.0005)
        with profiler:
            for _ in range(args.requests):
                producer.enqueue(REQUEST, producer="bench")
        text = profiler.output_text(unicode=False, color=False, show_all=False)
    finally:
        redis_proc.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

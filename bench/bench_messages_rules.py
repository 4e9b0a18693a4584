"""What ``/v1/messages``' own checks cost a request carrying a base64 image, on the event loop.

``gateway.api.messages_rules.check_rules`` on a body of one user turn with one PNG-typed base64
image of each size (random bytes), median of ``--repeat`` calls. With ``--base CHECKOUT`` the
same is timed with that checkout's module alternately, side by side.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_messages_rules.py [--base /tmp/old] [--repeat 15]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.api import messages_rules

SIZES = (100_000, 1_000_000, 5_000_000)


def module_at(checkout: Path) -> ModuleType:
    path = checkout / "gateway" / "api" / "messages_rules.py"
    spec = importlib.util.spec_from_file_location("base_messages_rules", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_ms(module: Any, body: dict[str, Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        module.check_rules(body)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    builds: list[tuple[str, Any]] = [("this build", messages_rules)]
    if args.base is not None:
        builds.append((f"base {args.base}", module_at(args.base)))
    for size in SIZES:
        data = base64.b64encode(os.urandom(size)).decode()
        body = {"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": data}}]}]}
        for _ in range(2):
            for name, module in builds:
                print(f"{size / 1e6:4.1f} MB image, {name}: "
                      f"{median_ms(module, body, args.repeat):.2f} ms", flush=True)


if __name__ == "__main__":
    main()

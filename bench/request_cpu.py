"""CPU per small request, by process, with what the processes use idle left out.

    python bench/request_cpu.py [count|embed] [--requests 400] [--ladle-root PATH]

Starts `ladle serve` (one CPU worker) on a private Redis, sends `--requests` token-count (`count`)
or single-text embedding (`embed`) requests one after the other from one keep-alive client, and
prints the CPU milliseconds per request of the API, each worker, Redis and this client, less each
process's idle rate (heartbeats, polling; measured for five seconds first). CPU per request moves
far less than latency when other work shares the machine; `--ladle-root` serves another checkout
so two versions can be compared on one machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import requests
from ladle_process import ROOT, ladle_serve

from cli.model_build import MINILM, build_model
from contracts.settings import Settings

GENERATION_MODEL = "smollm2-135m-instruct"
BODIES = {
    "count": (
        "/v1/chat/completions/tokenizer/encode/count",
        {"model": GENERATION_MODEL, "messages": [{"role": "user", "content": "How many tokens is this?"}]},
    ),
    "embed": ("/v1/embeddings", {"model": MINILM, "input": "the quick brown fox jumps over a lazy dog"}),
}


def process_cpu() -> dict[int, tuple[int, float]]:
    """Parent PID and CPU seconds (user + system) of every process, from Linux's /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return found


def tree(roots: list[int]) -> dict[int, float]:
    """CPU seconds of `roots` and their descendants, by PID."""
    processes, cpu, frontier = process_cpu(), {}, list(roots)
    while frontier:
        pid = frontier.pop()
        if pid in processes and pid not in cpu:
            cpu[pid] = processes[pid][1]
            frontier += [child for child, (parent, _) in processes.items() if parent == pid]
    return cpu


def role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    for needle, name in (("redis-server", "redis"), ("gunicorn", "api"), ("--lane light", "light worker")):
        if needle in command:
            return name
    if "--lane downloads" in command:
        return "downloads worker"
    return "compute worker" if " worker" in command else "ladle serve"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("request", choices=sorted(BODIES), nargs="?", default="count")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--model-dir", type=Path, default=Settings.from_env().model_dir)
    parser.add_argument("--ladle-root", type=Path, default=ROOT, help="the Ladle checkout to serve")
    args = parser.parse_args()
    path, body = BODIES[args.request]
    build_model(body["model"], args.model_dir)

    def ready(url: str) -> None:
        requests.post(url + path, json=body, timeout=30).raise_for_status()

    pids: list[int] = []
    with ladle_serve(args.model_dir, ready, {"LADLE_CPU_WORKERS": "1"}, root=args.ladle_root.resolve(), pids=pids) as (
        url,
        _,
    ):
        session = requests.Session()
        for _ in range(50):  # warm: connections, caches, the model
            session.post(url + path, json=body, timeout=30).raise_for_status()
        before_idle, idle_started = tree(pids), time.perf_counter()
        time.sleep(5)
        after_idle, idle_s = tree(pids), time.perf_counter() - idle_started
        client_before, started, before = time.process_time(), time.perf_counter(), tree(pids)
        for _ in range(args.requests):
            session.post(url + path, json=body, timeout=30).raise_for_status()
        after, wall, client = tree(pids), time.perf_counter() - started, time.process_time() - client_before
        roles = {pid: role(pid) for pid in after}  # while the processes still run
    per_role: dict[str, float] = {}
    for pid, cpu in after.items():
        idle_rate = (after_idle.get(pid, 0.0) - before_idle.get(pid, 0.0)) / idle_s
        busy = cpu - before.get(pid, 0.0) - idle_rate * wall
        per_role[roles[pid]] = per_role.get(roles[pid], 0.0) + 1000 * busy / args.requests
    print(f"Ladle at {args.ladle_root.resolve()}: {args.requests} {args.request} requests, one client")
    print(f"wall {1000 * wall / args.requests:.2f} ms per request; CPU ms per request, idle left out:")
    for name, ms in sorted(per_role.items()):
        print(f"  {name:18}{ms:8.2f}")
    print(f"  {'servers in all':18}{sum(per_role.values()):8.2f}")
    print(f"  {'this client':18}{1000 * client / args.requests:8.2f}")


if __name__ == "__main__":
    main()

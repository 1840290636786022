"""Run the chaos scenarios: `python -m bench.chaos [--seed N] [--scenario NAME ...] [--out DIR]`.

Needs root (network namespaces). Builds the fleet, runs the fault-free workload first (its
answers are the reference), then each scenario; writes one JSON report per scenario and prints a
summary line. Everything it made (namespaces, links, processes) is removed at the end, on
Ctrl-C or SIGTERM, and at the start of the next run if a run was killed outright.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.chaos.fleet import Fleet, kill_namespace_processes  # noqa: E402
from bench.chaos.invariants import check_all  # noqa: E402
from bench.chaos.network import PREFIX, Network, remove_leftovers  # noqa: E402
from bench.chaos.scenarios import SCENARIOS, Scenario  # noqa: E402
from bench.chaos.workload import CHAT_MODEL, EMBEDDING_MODEL, Workload, chat_body  # noqa: E402
from cli.model_build import BUILD_RECIPE_VERSION, build_model  # noqa: E402

log = logging.getLogger("chaos")

# The tests' model cache (tests/conftest.py): the tiny models are built once per machine.
MODEL_CACHE = Path(
    os.environ.get("LADLE_TEST_MODEL_CACHE", Path.home() / ".cache" / "ladle-test" / f"models-v{BUILD_RECIPE_VERSION}")
)
RECOVERY_TIMEOUT_S = 90
LEAD_IN_S = (1.5, 3.0)  # the fault comes this long after the workload starts (seeded)


def recovery_seconds(fleet: Fleet) -> float | None:
    """Seconds until a small synchronous chat succeeds on every API host (None: not within the bound)."""
    started = time.monotonic()
    pending = set(fleet.api_urls())
    while pending and time.monotonic() - started < RECOVERY_TIMEOUT_S:
        for url in sorted(pending):
            try:
                response = requests.post(f"{url}/v1/chat/completions", json=chat_body("probe", 2), timeout=10)
                if response.status_code == 200:
                    pending.discard(url)
            except requests.RequestException:
                pass
        if pending:
            time.sleep(0.2)
    return None if pending else round(time.monotonic() - started, 2)


def run_scenario(fleet: Fleet, scenario: Scenario, seed: int, baseline: dict | None) -> tuple[dict, dict]:
    rng = random.Random(f"{seed}-{scenario.name}")
    workload = Workload(fleet.api_urls(), scenario.name, seed)
    began = time.monotonic()
    workload.start()
    time.sleep(rng.uniform(*LEAD_IN_S))
    log.info("scenario %s: injecting", scenario.name)
    try:
        fault = scenario.run(fleet, rng)
    except Exception as error:  # the harness's own failure: heal, report it, go on
        log.exception("scenario %s failed to run", scenario.name)
        fleet.network.heal_all()
        fault = {"error": repr(error)}
    recovery_s = recovery_seconds(fleet)
    log.info("scenario %s: healed, recovered in %s s; waiting for the workload", scenario.name, recovery_s)
    finished = workload.wait()
    checks, answers, jobs = check_all(workload, baseline, fleet.redis())
    checks += fault.pop("checks", [])  # the scenario's own (the old primary's writes)
    if scenario.single_delivery:
        again = [(j["job_id"], j["deliveries"], j["started_on"]) for j in jobs["redelivered"]]
        checks.append(("no job delivered twice (no worker was lost past the visibility timeout)", not again, again))
    if "error" in fault:
        checks.append(("the fault was injected and healed", False, [fault["error"]]))
    if not finished:
        checks.append(("workload finished within its bound", False, ["still running at the deadline"]))
    statuses: dict[str, int] = {}
    for outcome in workload.outcomes:
        statuses[f"{outcome.kind}:{outcome.status}"] = statuses.get(f"{outcome.kind}:{outcome.status}", 0) + 1
    report = {
        "scenario": scenario.name,
        "what": scenario.what,
        "seed": seed,
        "fault": fault,
        "recovery_s": recovery_s,
        "wall_s": round(time.monotonic() - began, 2),
        "passed": all(passed for _, passed, _ in checks),
        "invariants": [{"name": n, "passed": p, "evidence": e} for n, p, e in checks],
        "outcomes": statuses,
        "jobs": jobs,
        "batch": {k: v for k, v in workload.batch.items() if k != "output"},
        "requests": [o.record() for o in workload.outcomes],
    }
    return report, answers


def cleanup(fleet_holder: list[Fleet]) -> None:
    """Stop the fleet (if any) and remove every namespace and link of ours; safe to call twice."""
    while fleet_holder:
        fleet = fleet_holder.pop()
        try:
            fleet.network.heal_all()
            fleet.stop()
        except Exception:
            log.exception("stopping the fleet failed; killing what is left")
    kill_namespace_processes(PREFIX)
    remove_leftovers()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--scenario", action="append", choices=names, help="run only these (baseline always runs)")
    parser.add_argument("--out", type=Path, default=None, help="reports and logs (default /tmp/ladle-chaos-<seed>)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if os.geteuid() != 0:
        print("chaos: needs root (network namespaces)", file=sys.stderr)
        return 2
    out = args.out or Path(f"/tmp/ladle-chaos-{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    fleet_holder: list[Fleet] = []

    def interrupted(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    atexit.register(cleanup, fleet_holder)
    kill_namespace_processes(PREFIX)
    remove_leftovers()

    started = time.monotonic()
    for model in (CHAT_MODEL, EMBEDDING_MODEL):
        build_model(model, MODEL_CACHE)
    chosen = [s for s in SCENARIOS if s.name == "baseline" or not args.scenario or s.name in args.scenario]
    results = []
    try:
        fleet = Fleet(Network(), out, args.seed)
        fleet_holder.append(fleet)
        fleet.start(MODEL_CACHE, [CHAT_MODEL, EMBEDDING_MODEL])
        fleet.wait_until_ready()
        log.info("fleet up in %.1f s", time.monotonic() - started)
        baseline = None
        for scenario in chosen:
            report, answers = run_scenario(fleet, scenario, args.seed, baseline)
            baseline = baseline or answers
            (out / f"{scenario.name}.json").write_text(json.dumps(report, indent=2, default=str))
            results.append(report)
            state = "pass" if report["passed"] else "FAIL"
            broken = [i["name"] for i in report["invariants"] if not i["passed"]]
            log.info(
                "scenario %s: %s %s (report %s)", scenario.name, state, broken or "", out / f"{scenario.name}.json"
            )
    finally:
        cleanup(fleet_holder)
    wall = time.monotonic() - started
    failed = [r["scenario"] for r in results if not r["passed"]]
    lost = sum(len(r["jobs"].get("lost_messages", [])) for r in results)
    summary = (
        f"chaos seed={args.seed} scenarios={len(results)} passed={len(results) - len(failed)} "
        f"failed={len(failed)}{' ' + ','.join(failed) if failed else ''} lost_messages={lost} "
        f"wall={wall:.0f}s reports={out}"
    )
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``task-sidecar-harness run SCENARIO...``: each scenario on its own fresh sidecar."""

from __future__ import annotations

import dataclasses
import sys

from sidecar.harness.scenario import Runner, ScenarioError, load
from sidecar.harness.session import SidecarOptions, open_sidecar


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_scenarios(opts: SidecarOptions, paths: list[str], keep_going: bool = False) -> int:
    try:
        scenarios = [load(p) for p in paths]
    except (OSError, ScenarioError) as exc:
        sys.stderr.write(f"task-sidecar-harness: {exc}\n")
        return 2
    if opts.db and len(scenarios) > 1:
        sys.stderr.write("task-sidecar-harness: note: all scenarios share the database given with --db\n")
    failed = died = 0
    for i, scenario in enumerate(scenarios):
        run_opts = opts
        if opts.record and len(scenarios) > 1:
            run_opts = dataclasses.replace(opts, record=f"{opts.record}.{i + 1}")
        with open_sidecar(run_opts, scenario.sidecar_args) as client:
            outcome = Runner(client, _out, keep_going=keep_going).run(scenario)
        if not outcome.ok:
            failed += 1
        died += outcome.sidecar_died
    if len(scenarios) > 1:
        _out(f"{len(scenarios) - failed} of {len(scenarios)} scenarios passed")
    # a sidecar that died is exit 3 (docs/harness.md), above a mere failed check
    return 3 if died else 1 if failed else 0

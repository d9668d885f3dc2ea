"""A small real program for process.run tests: prints progress, starts a grandchild, waits.

    tree_script.py PIDFILE [--steps N] [--delay S] [--ignore-term] [--exit CODE] [--no-child]
"""

import os
import signal
import subprocess
import sys
import time

args = sys.argv[1:]
pidfile = args[0]


def opt(name, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


steps, delay, code = opt("--steps", 1000), opt("--delay", 0.05), opt("--exit", 0)
if "--ignore-term" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
if "--no-child" not in args:
    grandchild_code = "import signal, time\n"
    if "--ignore-term" in args:
        grandchild_code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    grandchild_code += "time.sleep(120)\n"
    child = subprocess.Popen([sys.executable, "-c", grandchild_code], stdin=subprocess.DEVNULL)
    pids.append(child.pid)
with open(pidfile + ".tmp", "w") as f:
    f.write(" ".join(map(str, pids)))
os.replace(pidfile + ".tmp", pidfile)
for i in range(steps):
    print(f"step {i + 1}/{steps} {int((i + 1) * 100 / steps)}%", flush=True)
    time.sleep(delay)
print("some warning on stderr", file=sys.stderr, flush=True)
if code:
    print("fatal: it broke", file=sys.stderr, flush=True)
sys.exit(code)

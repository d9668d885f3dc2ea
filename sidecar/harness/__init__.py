"""Standalone stdio harness for task-sidecar.

Starts a sidecar child process and speaks the JSON-RPC protocol to it: interactively (a prompt and a
live view), as a scripted scenario (``run``), as a demo workload (``--demo``), or by replaying a
recorded session (``replay``). See docs/harness.md.
"""

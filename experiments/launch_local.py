"""Runs `python -m vlx.main` as N cooperating JAX processes on this machine.

Each process gets `--config.distributed.*` flags pointing at one local
coordinator (a free port on 127.0.0.1), gloo CPU collectives, and
JAX_NUM_CPU_DEVICES emulated CPU devices; everything after the launcher's own
flags goes to vlx.main unchanged:

    python experiments/launch_local.py --num_processes=2 --devices_per_process=2 \
        --config=configs/clip.py:smoke --workdir=/tmp/mp [--config.x=y ...]

Output lines are prefixed `[pI]`. If one process fails the others are stopped
(a peer waiting in a collective would otherwise hang); the exit status is 0 only
if every process exited 0, else the first failure's status.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _strip_device_count(xla_flags: str) -> str:
  """A parent's --xla_force_host_platform_device_count would fight JAX_NUM_CPU_DEVICES."""
  return " ".join(f for f in xla_flags.split()
                  if not f.startswith("--xla_force_host_platform_device_count"))


def child_env(devices_per_process: int, platforms: str) -> dict:
  env = dict(os.environ)
  env["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
  if "XLA_FLAGS" in env:
    env["XLA_FLAGS"] = _strip_device_count(env["XLA_FLAGS"])
  if platforms:
    env["JAX_PLATFORMS"] = platforms
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  return env


def process_argv(vlx_argv: Sequence[str], i: int, n: int, port: int,
                 cpu_collectives: str) -> List[str]:
  return [sys.executable, "-m", "vlx.main", *vlx_argv,
          "--config.distributed.enabled=True",
          f"--config.distributed.coordinator_address=127.0.0.1:{port}",
          f"--config.distributed.num_processes={n}",
          f"--config.distributed.process_id={i}",
          f"--config.distributed.cpu_collectives={cpu_collectives}"]


def _pump(proc: subprocess.Popen, prefix: str, out, lock: threading.Lock):
  for line in iter(proc.stdout.readline, ""):
    with lock:
      out.write(f"{prefix}{line}" if line.endswith("\n") else f"{prefix}{line}\n")
      out.flush()
  proc.stdout.close()


def _stop(procs: Sequence[subprocess.Popen], grace_s: float = 5.0):
  """SIGTERM the still-running processes we started, then SIGKILL after `grace_s` (a process
  in jax.distributed may treat SIGTERM as a preemption notice and keep running)."""
  alive = [p for p in procs if p.poll() is None]
  for p in alive:
    try:
      p.send_signal(signal.SIGTERM)
    except ProcessLookupError:
      pass
  deadline = time.time() + grace_s
  for p in alive:
    try:
      p.wait(timeout=max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def launch(vlx_argv: Sequence[str], num_processes: int = 2, devices_per_process: int = 1,
           port: int = 0, cpu_collectives: str = "gloo", platforms: str = "cpu",
           timeout_s: Optional[float] = None, out=None) -> int:
  """Starts the processes, streams their output, returns 0 or the first failure's status."""
  out = out or sys.stdout
  port = port or free_port()
  env = child_env(devices_per_process, platforms)
  lock = threading.Lock()
  procs, pumps = [], []
  with lock:
    out.write(f"[launch] {num_processes} processes x {devices_per_process} devices, "
              f"coordinator 127.0.0.1:{port}, {cpu_collectives} CPU collectives\n")
    out.flush()
  try:
    for i in range(num_processes):
      p = subprocess.Popen(process_argv(vlx_argv, i, num_processes, port, cpu_collectives),
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, bufsize=1, errors="replace")
      procs.append(p)
      t = threading.Thread(target=_pump, args=(p, f"[p{i}] ", out, lock), daemon=True)
      t.start()
      pumps.append(t)

    start = time.time()
    failed: Optional[int] = None
    while True:
      codes = [p.poll() for p in procs]
      bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if bad:
        i, failed = bad[0]
        with lock:
          out.write(f"[launch] process {i} exited with status {failed}; stopping the others\n")
          out.flush()
        break
      if all(c == 0 for c in codes):
        break
      if timeout_s is not None and time.time() - start > timeout_s:
        with lock:
          out.write(f"[launch] timed out after {timeout_s:.0f}s; stopping all processes\n")
          out.flush()
        failed = 124
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    failed = 130
  finally:
    _stop(procs)
    for t in pumps:
      t.join(timeout=5)
  if failed is None:
    codes = [p.returncode for p in procs]
    failed = next((c for c in codes if c != 0), 0)
  with lock:
    out.write(f"[launch] exit status {failed} (per process: "
              f"{[p.returncode for p in procs]})\n")
    out.flush()
  return failed


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0], allow_abbrev=False,
      epilog="All other arguments (--config=..., --workdir=..., --config.x=y) go to vlx.main.")
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1,
                      help="JAX_NUM_CPU_DEVICES of each process")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--cpu_collectives", default="gloo", help="gloo | mpi")
  parser.add_argument("--platforms", default="cpu",
                      help="JAX_PLATFORMS of the processes ('' leaves it as inherited)")
  parser.add_argument("--timeout_s", type=float, default=None,
                      help="stop every process after this many seconds (exit status 124)")
  args, rest = parser.parse_known_args(argv)
  if rest and rest[0] == "--":
    rest = rest[1:]
  if not any(a.startswith("--config=") for a in rest) or \
      not any(a.startswith("--workdir=") for a in rest):
    parser.error("vlx.main needs --config=... and --workdir=...")
  if args.num_processes < 1 or args.devices_per_process < 1:
    parser.error("--num_processes and --devices_per_process must be >= 1")
  return launch(rest, args.num_processes, args.devices_per_process, args.port,
                args.cpu_collectives, args.platforms, args.timeout_s)


if __name__ == "__main__":
  sys.exit(main())

"""Start N copies of a command on this machine as one multi-process JAX job.

    python -m launch.local_cluster --num_processes=2 --devices_per_process=4 -- \
        python -m launch.train --config=configs/ppo/cartpole_gymnax.py --workdir=runs/mh --multihost

For tests of multi-host code paths, and for users without a cluster. Every copy gets the
coordinator (a free loopback port, or ``--port``), the process count and its own index in the
``JAXLAB_COORDINATOR_ADDRESS`` / ``JAXLAB_NUM_PROCESSES`` / ``JAXLAB_PROCESS_ID`` variables,
which ``launch.train --multihost`` reads (``jaxlab.core.mesh.initialize_distributed``); on CPU
the processes exchange data through gloo, over 127.0.0.1 only. Each output line is forwarded
with a ``[pI]`` prefix. When one process ends with a failure (an error, a signal), the others
are stopped and this launcher exits with that process's status, after one line naming it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from jaxlab.core import ports
from jaxlab.core.errors import ConfigError

_OWN_EXIT_S = 2.0  # after one process fails, how long the others may take to end by themselves
_GRACE_S = 5.0  # how long stopped processes get to exit after SIGTERM before SIGKILL


# gloo announces every connection it makes ("[Gloo] Rank 1 is connected to 7 peer ranks.
# Expected number of connected peer ranks is : 7"), sometimes two to a line; that is dropped.
_GLOO_NOISE = re.compile(r"\[Gloo\] Rank \d+ is connected to \d+ peer ranks\.\s*"
                         r"(Expected number of connected peer ranks is : \d+)?\s*")


def _forward(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock) -> None:
  for line in stream:
    if "[Gloo]" in line or line.startswith("Expected number of connected peer"):
      line = _GLOO_NOISE.sub("", line)
      line = re.sub(r"^Expected number of connected peer ranks is : \d+\s*", "", line)
      if not line.strip():
        continue
      line = line.rstrip("\n") + "\n"
    with lock:
      out.write(prefix + line)
      out.flush()
  stream.close()


def _status(code: int) -> str:
  if code < 0:
    try:
      return f"killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"killed by signal {-code}"
  return f"exit status {code}"


def _child_env(address: str, num: int, index: int, devices: int | None) -> dict[str, str]:
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.update({ports.ENV_ADDRESS: address, ports.ENV_NUM: str(num), ports.ENV_ID: str(index)})
  if devices:
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  return env


def launch(command: list[str], num_processes: int, port: int | None = None,
           devices_per_process: int | None = None) -> int:
  """Runs ``command`` as ``num_processes`` processes; returns the job's exit status (0 when
  every process succeeded, else the first failing process's status, 128+N for signal N)."""
  port = ports.free_port() if port is None else port
  ports.check_port_free(port)
  address = f"127.0.0.1:{port}"
  print(f"local_cluster: {num_processes} processes, coordinator {address}", file=sys.stderr,
        flush=True)
  lock = threading.Lock()
  procs: list[subprocess.Popen] = []
  threads: list[threading.Thread] = []
  for i in range(num_processes):
    p = subprocess.Popen(command, env=_child_env(address, num_processes, i, devices_per_process),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    procs.append(p)
    for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
      t = threading.Thread(target=_forward, args=(stream, f"[p{i}] ", out, lock), daemon=True)
      t.start()
      threads.append(t)

  def stop_all(*_):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)

  old = {s: signal.signal(s, lambda *a: stop_all()) for s in (signal.SIGINT, signal.SIGTERM)}
  failed: tuple[int, int] | None = None
  try:
    while True:
      codes = [p.poll() for p in procs]
      bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if bad:
        failed = bad[0]
        break
      if all(c == 0 for c in codes):
        break
      time.sleep(0.05)
    if failed is not None:
      index, code = failed
      if any(p.poll() is None for p in procs):
        with lock:
          print(f"local_cluster: process {index} ended ({_status(code)}); stopping the others",
                file=sys.stderr, flush=True)
      # Others that fail on the same input (a bad config) get to say why before being stopped.
      deadline = time.time() + _OWN_EXIT_S
      while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
      stop_all()
      deadline = time.time() + _GRACE_S
      while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
      for p in procs:
        if p.poll() is None:
          p.kill()
      for p in procs:
        p.wait()
  finally:
    for s, handler in old.items():
      signal.signal(s, handler)
    for t in threads:
      t.join(timeout=5)
  if failed is None:
    return 0
  code = failed[1]
  if all(p.returncode == code for p in procs):  # e.g. every process refused a bad config
    with lock:
      print(f"local_cluster: every process ended with {_status(code)}", file=sys.stderr,
            flush=True)
  return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--" not in argv:
    print("error: usage: python -m launch.local_cluster --num_processes=N [--port=P] "
          "[--devices_per_process=K] -- COMMAND...", file=sys.stderr)
    return 2
  split = argv.index("--")
  parser = argparse.ArgumentParser(prog="python -m launch.local_cluster")
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--port", type=int, default=None,
                      help="coordinator port on 127.0.0.1 (default: a free one)")
  parser.add_argument("--devices_per_process", type=int, default=None,
                      help="CPU devices per process (sets JAX_PLATFORMS=cpu and XLA_FLAGS)")
  args = parser.parse_args(argv[:split])
  command = argv[split + 1:]
  try:
    if args.num_processes < 1:
      raise ConfigError(f"--num_processes={args.num_processes} must be >= 1")
    if args.devices_per_process is not None and args.devices_per_process < 1:
      raise ConfigError(f"--devices_per_process={args.devices_per_process} must be >= 1")
    if not command:
      raise ConfigError("no command after '--'")
    return launch(command, args.num_processes, args.port, args.devices_per_process)
  except ConfigError as err:
    print(f"error: {err}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
  sys.exit(main())

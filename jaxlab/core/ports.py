"""What a launcher needs before any process joins a job, without importing jax: the loopback
coordinator's port (a free one, or a check that the chosen one can be bound) and the names of
the environment variables through which ``launch.local_cluster`` hands each process its place
(read by :func:`jaxlab.core.mesh.initialize_distributed`). Starting jax costs a launcher ~1.6 s
of CPU on 2 cores; ``launch.local_cluster`` only starts processes, so it stays without it.
"""

from __future__ import annotations

import socket

from jaxlab.core.errors import ConfigError

ENV_ADDRESS, ENV_NUM, ENV_ID = ("JAXLAB_COORDINATOR_ADDRESS", "JAXLAB_NUM_PROCESSES",
                                "JAXLAB_PROCESS_ID")


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
  """Raises ``ConfigError`` when the coordinator's port cannot be bound (in use, or invalid)."""
  if not 0 < port < 65536:
    raise ConfigError(f"coordinator port {port} is not in 1..65535")
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
      s.bind((host, port))
    except OSError as err:
      raise ConfigError(f"coordinator port {host}:{port} is in use ({err.strerror}); pick "
                        f"another port or stop the process holding it") from None

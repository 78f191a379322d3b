"""PQN on gymnax SpaceInvaders-MinAtar: configs/pqn/breakout_minatar.py with another game.

    python -m launch.train --config=configs/pqn/space_invaders_minatar.py --workdir=runs/pqn_space_invaders
"""

import importlib.util
import os


def get_config():
  # Loaded by path, so the file works wherever the launcher or a test imports it from.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "breakout_minatar.py")
  spec = importlib.util.spec_from_file_location("pqn_breakout_minatar", path)
  base = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(base)
  return base.get_config("SpaceInvaders")

"""PQN on gymnax Asterix-MinAtar: configs/pqn/breakout_minatar.py with another game.

    python -m launch.train --config=configs/pqn/asterix_minatar.py --workdir=runs/pqn_asterix
"""

import os

from jaxlab.core.config import load_file


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  return load_file(os.path.join(here, "breakout_minatar.py"), "Asterix")

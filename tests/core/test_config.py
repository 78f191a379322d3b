"""Config validation: each mistake gives one line naming the key."""

import ml_collections
import pytest

from jaxlab.core import config as config_lib
from jaxlab.core.errors import ConfigError


def _defaults():
  c = ml_collections.ConfigDict()
  c.lr = 1e-3
  c.steps = 10
  c.name = "a"
  c.flag = True
  c.opt = None
  c.sizes = (32, 32)
  c.eval = ml_collections.ConfigDict(dict(every=5, num_envs=4))
  return c


def test_defaults_pass():
  config_lib.check_against_defaults(_defaults(), _defaults())


def test_int_allowed_for_float():
  c = _defaults()
  c.lr = 1
  config_lib.check_against_defaults(c, _defaults())


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.__setitem__("lrr", 1.0), "unknown config key 'config.lrr'"),
    (lambda d: d["eval"].__setitem__("evry", 1), "unknown config key 'config.eval.evry'"),
    (lambda d: d.__setitem__("steps", 1.5), "'config.steps' must be int"),
    (lambda d: d.__setitem__("lr", True), "'config.lr' must be float"),
    (lambda d: d.__setitem__("name", 3), "'config.name' must be str"),
    (lambda d: d.__setitem__("sizes", 3), "'config.sizes' must be a list/tuple"),
    (lambda d: d.__setitem__("eval", 3), "'config.eval' must be a group"),
])
def test_mistakes_name_the_key(mutate, needle):
  # A config file may build any dict; ConfigDict only type-checks later assignments.
  d = _defaults().to_dict()
  mutate(d)
  c = ml_collections.ConfigDict(d)
  with pytest.raises(ConfigError) as info:
    config_lib.check_against_defaults(c, _defaults())
  assert needle in str(info.value)
  assert "\n" not in str(info.value)


def test_none_default_accepts_anything():
  c = _defaults()
  c.opt = {"a": 1}
  config_lib.check_against_defaults(c, _defaults())


def test_require_choice():
  c = _defaults()
  config_lib.require_choice(c, "name", ["a", "b"])
  with pytest.raises(ConfigError, match="'config.name'='a' is not one of"):
    config_lib.require_choice(c, "name", ["b"])

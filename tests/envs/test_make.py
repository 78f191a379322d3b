"""jaxlab.envs.make: names, errors, default stack."""

import pytest

import jaxlab.envs as envs
from jaxlab.envs import ActionRepeat, AutoReset, TimeLimit


def _error(name, **kwargs):
  with pytest.raises(ValueError) as info:
    envs.make(name, **kwargs)
  message = str(info.value)
  assert '\n' not in message, message
  return message


def test_unknown_playground_name_lists_valid_names_and_suggests():
  message = _error('playground/Cartpol')
  assert message.startswith("unknown env 'playground/Cartpol': valid Playground DM Control "
                            'names are '), message
  assert 'CartpoleBalance' in message and 'CheetahRun' in message
  assert "did you mean 'playground/Cartpole" in message


@pytest.mark.parametrize('name, family, valid', [
    ('gymnax/CartPole-v9', 'gymnax', 'CartPole-v1'),
    ('gymnax/breakout', 'gymnax', 'Breakout-MinAtar'),
    ('brax/antt', 'Brax', 'ant'),
])
def test_unknown_backend_names(name, family, valid):
  message = _error(name)
  assert message.startswith(f"unknown env '{name}': valid {family} names are "), message
  assert valid in message


@pytest.mark.parametrize('name', ['mujoco/CartpoleBalance', 'CartPole-v1', ''])
def test_unknown_prefix_lists_backends(name):
  message = _error(name)
  assert message.startswith(f"unknown env '{name}':"), message
  for prefix in ('playground/', 'brax/', 'gymnax/'):
    assert prefix in message
  assert "'gymnax/CartPole-v1'" in message


def test_bad_lengths():
  assert 'action_repeat' in _error('gymnax/CartPole-v1', action_repeat=0)
  assert 'episode_length' in _error('gymnax/CartPole-v1', episode_length=-3)


def test_default_stack_and_lengths():
  env = envs.make('gymnax/CartPole-v1')
  assert isinstance(env, AutoReset) and isinstance(env.env, TimeLimit)
  assert env.spec.episode_length == 500 and env.spec.name == 'gymnax/CartPole-v1'
  assert type(env.unwrapped).__name__ == 'GymnaxEnv'
  env = envs.make('gymnax/Breakout-MinAtar', action_repeat=3, auto_reset=False)
  assert isinstance(env, TimeLimit) and isinstance(env.env, ActionRepeat)
  assert env.spec.episode_length == 334  # ceil(1000 / 3) agent steps
  assert envs.make('gymnax/CartPole-v1', episode_length=20).spec.episode_length == 20


def test_valid_names():
  assert 'CartPole-v1' in envs.valid_names('gymnax')
  assert 'ant' in envs.valid_names('brax')
  with pytest.raises(ValueError, match='valid backends are playground, brax, gymnax'):
    envs.valid_names('dmc')

"""Pure RL algorithms in the ``make_train(config, env) -> train(key)`` shape."""

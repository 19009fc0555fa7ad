"""Probe: what model replacement (A3) does to a FEMNIST global model that has learned.

Under A3 our FEMNIST global model sits at one-class accuracy from the first
evaluations on, where the paper's keeps .517 / .487 / .314 at 10 / 15 / 20 %.
One explanation would be the CNN's long initial plateau: attackers could keep
a model from ever leaving it. This probe starts the attack from a model that
has left it: FedAvg trains clean for `--clean_rounds`, then the same model
continues under A3 for `--attacked_rounds`. After each round of the attacked
phase it records the round's update norm and sampled attackers; at
`--describe_every` rounds (and the first few) the global model's mean
validation accuracy over benign writers, how many of its 128 hidden units
fire on any of 2,000 validation images, how many classes it predicts, and its
layers' weight norms. Validation data only.

  .venv/bin/python scripts/probe_a3_trained_model.py --data_dir=../shared/data

Results: `--output` (JSON).
"""

from __future__ import annotations

import json
import os
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402

from tff_ditto import models  # noqa: E402
from tff_ditto import runtime  # noqa: E402
from tff_ditto import training  # noqa: E402
from tff_ditto import training_config  # noqa: E402
from tff_ditto.data import load_dataset  # noqa: E402

_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the datasets (femnist/, ...).'
)
_CLEAN_ROUNDS = flags.DEFINE_integer(
    'clean_rounds', 100, 'Clean FedAvg rounds before the attack.'
)
_ATTACKED_ROUNDS = flags.DEFINE_integer(
    'attacked_rounds', 200, 'Rounds under A3 from the clean model.'
)
_RATIO = flags.DEFINE_float('attack_ratio', 0.1, 'Share of A3 attackers.')
_CLIENT_LR = flags.DEFINE_float('client_lr', 0.1, 'Local SGD learning rate.')
_DESCRIBE_EVERY = flags.DEFINE_integer(
    'describe_every', 25, 'Describe the global model every this many rounds.'
)
_OUTPUT = flags.DEFINE_string(
    'output', 'results/probe_a3_trained_model.json', 'JSON written.'
)

_DESCRIBED_IMAGES = 2000


def _config(rounds: int, **attack) -> training_config.ExperimentConfig:
  return training_config.ExperimentConfig(
      method='global',
      rounds=rounds,
      clients_per_round=10,
      local_steps=10,
      batch_size=10,
      client_lr=_CLIENT_LR.value,
      eval_every=10**9,
      checkpoint_every=0,
      seed=0,
      eval_split='validation',
      **attack,
  )


def describe(runner, spec, images: np.ndarray, round_num: int) -> dict:
  """The global model's validation accuracy, live hidden units and classes."""
  weights = runner.process.get_model_weights(runner.state)
  model = spec.keras_model_fn()
  model.set_weights(list(weights.trainable) + list(weights.non_trainable))
  hidden_layer = [
      layer
      for layer in model.layers
      if isinstance(layer, tf.keras.layers.Dense)
  ][0]
  hidden = tf.keras.Model(model.inputs, hidden_layer.output)(
      images, training=False
  ).numpy()
  logits = model(images, training=False).numpy()
  summary = runner.evaluate_global_model('validation')
  return dict(
      round=round_num,
      validation_benign_mean_accuracy=float(summary['benign_mean_accuracy']),
      hidden_units_alive=int((hidden > 0).any(axis=0).sum()),
      hidden_units=int(hidden.shape[1]),
      classes_predicted=int(len(np.unique(logits.argmax(axis=1)))),
      weight_norms=[float(np.linalg.norm(w)) for w in weights.trainable],
  )


def main(argv):
  del argv
  runtime.set_quiet_logs(0)
  runtime.configure_local_execution()
  dataset = load_dataset(
      'femnist', _DATA_DIR.value, validation_fraction=0.1, seed=0
  )
  spec = models.get_model_spec('femnist', seed=0)
  images = np.concatenate(
      [dataset.validation[client]['x'] for client in dataset.client_ids]
  )[:_DESCRIBED_IMAGES]
  with tempfile.TemporaryDirectory(prefix='probe_a3_') as scratch:
    clean = training.ExperimentRunner(
        _config(_CLEAN_ROUNDS.value),
        dataset,
        spec.tff_model_fn(),
        os.path.join(scratch, 'clean'),
        log_fn=None,
    )
    for round_num in range(_CLEAN_ROUNDS.value):
      clean.run_round(round_num)
    described = [describe(clean, spec, images, _CLEAN_ROUNDS.value)]
    print(json.dumps(described[-1]), flush=True)
    total = _CLEAN_ROUNDS.value + _ATTACKED_ROUNDS.value
    attacked = training.ExperimentRunner(
        _config(total, attack='a3', attack_ratio=_RATIO.value),
        dataset,
        spec.tff_model_fn(),
        os.path.join(scratch, 'attacked'),
        log_fn=None,
    )
    attacked.state = attacked.process.set_model_weights(
        attacked.state, clean.process.get_model_weights(clean.state)
    )
    rounds = []
    for round_num in range(_CLEAN_ROUNDS.value, total):
      before = attacked.process.get_model_weights(attacked.state).trainable
      before = [np.array(w) for w in before]
      row = attacked.run_round(round_num)
      after = attacked.process.get_model_weights(attacked.state).trainable
      rounds.append(
          dict(
              round=round_num + 1,
              sampled_malicious=int(row['sampled_malicious']),
              update_norm=float(
                  np.sqrt(
                      sum(np.sum((a - b) ** 2) for a, b in zip(after, before))
                  )
              ),
          )
      )
      attacked_rounds = round_num + 1 - _CLEAN_ROUNDS.value
      if attacked_rounds in (1, 2, 5) or (
          attacked_rounds % _DESCRIBE_EVERY.value == 0
      ):
        described.append(describe(attacked, spec, images, round_num + 1))
        print(json.dumps(described[-1]), flush=True)
  os.makedirs(os.path.dirname(_OUTPUT.value) or '.', exist_ok=True)
  with open(_OUTPUT.value, 'w') as f:
    json.dump(
        dict(
            settings=dict(
                clean_rounds=_CLEAN_ROUNDS.value,
                attacked_rounds=_ATTACKED_ROUNDS.value,
                attack_ratio=_RATIO.value,
                client_lr=_CLIENT_LR.value,
                clients_per_round=10,
                local_steps=10,
                batch_size=10,
                seed=0,
            ),
            described=described,
            rounds=rounds,
        ),
        f,
        indent=1,
    )
    f.write('\n')


if __name__ == '__main__':
  app.run(main)

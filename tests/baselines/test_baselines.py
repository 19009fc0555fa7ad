"""Tests for tff_ditto.baselines: each baseline's defining property, on the toy model.

Real TFF computations on the linear 5 -> 3 classifier of `toy.py`; expected
values come from the numpy (float64) reference of `toy.py` or from another
method whose equality is the property (TERM t=0 == FedAvg, APFL alpha=1 ==
local training, EWC / SKL lambda=0 == plain fine-tuning).
"""

import collections
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import process_output
import repo_paths
import toy
from tff_ditto import client_states
from tff_ditto import evaluation
from tff_ditto.baselines import apfl
from tff_ditto.baselines import finetuning
from tff_ditto.baselines import l2sgd
from tff_ditto.baselines import mapper
from tff_ditto.baselines import perfedavg
from tff_ditto.baselines import term

LR = 0.1
BATCH = 5
STEPS = 2
W_T = toy.random_weights(1)
ARRAYS = [
    toy.client_arrays(0, 4 * BATCH),
    toy.client_arrays(3, 4 * BATCH, label_shift=1),
]
MODEL_SIZE = sum(int(np.prod(s)) for s in toy.SHAPES)


def _flat(weights):
  return np.concatenate(
      [np.asarray(w, np.float64).reshape(-1) for w in weights]
  )


def _unflat(flat):
  sizes = [int(np.prod(s)) for s in toy.SHAPES]
  pieces = np.split(np.asarray(flat, np.float64), np.cumsum(sizes)[:-1])
  return [p.reshape(s) for p, s in zip(pieces, toy.SHAPES)]


def _read_raw(path):
  return client_states.read_flat_state(path)


def _state_data(tmp_path, k, start_weights, tag='r'):
  read_path = os.path.join(tmp_path, f'{tag}_read_{k}.state')
  write_path = os.path.join(tmp_path, f'{tag}_write_{k}.state')
  toy.write_state(read_path, start_weights)
  return toy.handle_dataset(read_path, write_path), write_path


# ------------------------------------------------------------------- TERM


def _term_data(arrays):
  return collections.OrderedDict(
      batches=toy.fixed_batches(arrays, BATCH),
      full_train=toy.fixed_batches(arrays, 7),
  )


def test_term_with_t_zero_is_fedavg_bit_for_bit():
  fedavg = toy.build_process(lr=LR, local_steps=STEPS, personalize=False)
  tilted = term.build_term_process(
      toy.model_fn, client_optimizer=toy.sgd(LR), tilt=0.0, local_steps=STEPS
  )
  fedavg_out = fedavg.next(
      toy.with_global_weights(fedavg, W_T),
      [toy.fixed_batches(a, BATCH) for a in ARRAYS],
  )
  term_out = tilted.next(
      toy.with_global_weights(tilted, W_T), [_term_data(a) for a in ARRAYS]
  )
  toy.assert_weights_equal(
      toy.global_weights(fedavg, fedavg_out.state),
      toy.global_weights(tilted, term_out.state),
  )


def test_term_weights_updates_by_exp_of_round_start_loss():
  t = 2.0
  tilted = term.build_term_process(
      toy.model_fn, client_optimizer=toy.sgd(LR), tilt=t, local_steps=STEPS
  )
  output = tilted.next(
      toy.with_global_weights(tilted, W_T), [_term_data(a) for a in ARRAYS]
  )
  weights, updates = [], []
  for arrays in ARRAYS:
    loss, _ = toy.evaluate_reference(W_T, arrays)
    weights.append(np.exp(t * loss))
    local = toy.sgd_reference(W_T, toy.split_batches(arrays, BATCH)[:STEPS], LR)
    updates.append(_flat(local) - _flat(W_T))
  assert abs(weights[0] - weights[1]) > 0.1  # The tilt matters here.
  expected = _flat(W_T) + np.average(updates, axis=0, weights=weights)
  np.testing.assert_allclose(
      _flat(toy.global_weights(tilted, output.state)), expected, atol=1e-5
  )


# ------------------------------------------------------------------ L2SGD


def test_l2sgd_trains_local_models_only_and_scales_the_server_step(tmp_path):
  lam, num_clients = 0.7, 5
  scale = l2sgd.server_learning_rate(1.0, len(ARRAYS), num_clients)
  assert scale == pytest.approx(2 / 5)
  process = l2sgd.build_l2sgd_process(
      toy.model_fn,
      client_optimizer=toy.sgd(LR),
      mean_regularization=lam,
      local_steps=STEPS,
      server_optimizer=toy.sgd(scale),
  )
  data, write_paths, starts = [], [], []
  for k, arrays in enumerate(ARRAYS):
    start = toy.random_weights(10 + k)
    handle, write_path = _state_data(tmp_path, k, start)
    data.append(
        collections.OrderedDict(
            batches=toy.fixed_batches(arrays, BATCH), personal_state=handle
        )
    )
    write_paths.append(write_path)
    starts.append(start)
  output = process.next(toy.with_global_weights(process, W_T), data)
  deltas = []
  for arrays, start, path in zip(ARRAYS, starts, write_paths):
    expected = toy.sgd_reference(
        start, toy.split_batches(arrays, BATCH)[:STEPS], LR, center=W_T, lam=lam
    )
    toy.assert_weights_close(toy.read_state(path), expected)
    deltas.append(_flat(expected) - _flat(W_T))
  np.testing.assert_allclose(
      _flat(toy.global_weights(process, output.state)),
      _flat(W_T) + np.mean(deltas, axis=0) * 2 / 5,
      atol=1e-5,
  )


def test_l2sgd_with_large_lambda_pulls_local_models_to_the_global_one(tmp_path):
  distances = []
  for lam in (0.0, 9.0):  # lr * lam = 0.9 < 1: stable and strongly pulled.
    process = l2sgd.build_l2sgd_process(
        toy.model_fn,
        client_optimizer=toy.sgd(LR),
        mean_regularization=lam,
        local_steps=STEPS,
    )
    handle, write_path = _state_data(
        tmp_path, 0, toy.random_weights(10), tag=f'lam{lam}'
    )
    process.next(
        toy.with_global_weights(process, W_T),
        [
            collections.OrderedDict(
                batches=toy.fixed_batches(ARRAYS[0], BATCH),
                personal_state=handle,
            )
        ],
    )
    distances.append(toy.distance(toy.read_state(write_path), W_T))
  assert distances[1] < 0.5 * distances[0]


# ------------------------------------------------------------------- APFL


def test_apfl_with_alpha_one_is_local_training_bit_for_bit(tmp_path):
  local = toy.build_process(lr=LR, local_steps=STEPS, personal_lambda=0.0)
  interpolating = apfl.build_apfl_process(
      toy.model_fn, client_optimizer=toy.sgd(LR), alpha=1.0, local_steps=STEPS
  )
  start = toy.random_weights(7)
  for round_num in range(2):  # Round 2 reads APFL's (v, a) file.
    local_handle, local_path = _state_data(
        tmp_path, 0, start, tag=f'local{round_num}'
    )
    apfl_write = os.path.join(tmp_path, f'apfl_write_{round_num}.state')
    if round_num == 0:
      apfl_read = os.path.join(tmp_path, 'apfl_read.state')
      toy.write_state(apfl_read, start)
    else:
      apfl_read = previous_write
    batches = toy.fixed_batches(ARRAYS[round_num], BATCH)
    local.next(
        toy.with_global_weights(local, W_T),
        [collections.OrderedDict(batches=batches, personal_state=local_handle)],
    )
    interpolating.next(
        toy.with_global_weights(interpolating, W_T),
        [
            collections.OrderedDict(
                batches=batches,
                personal_state=toy.handle_dataset(apfl_read, apfl_write),
            )
        ],
    )
    raw = _read_raw(apfl_write)
    assert raw.shape == (2 * MODEL_SIZE,)
    np.testing.assert_array_equal(raw[:MODEL_SIZE], _read_raw(local_path))
    start = toy.read_state(local_path)
    previous_write = apfl_write


def test_apfl_matches_the_reference_iteration(tmp_path):
  alpha = 0.3
  process = apfl.build_apfl_process(
      toy.model_fn, client_optimizer=toy.sgd(LR), alpha=alpha, local_steps=STEPS
  )
  v = toy.random_weights(7)
  handle, write_path = _state_data(tmp_path, 0, v)
  output = process.next(
      toy.with_global_weights(process, W_T),
      [
          collections.OrderedDict(
              batches=toy.fixed_batches(ARRAYS[0], BATCH), personal_state=handle
          )
      ],
  )
  w_k = [np.asarray(x, np.float64) for x in W_T]
  v = [np.asarray(x, np.float64) for x in v]
  mixed = v  # The initial file: a = v.
  for batch in toy.split_batches(ARRAYS[0], BATCH)[:STEPS]:
    _, g_w = toy.loss_and_grad(w_k, batch)
    w_k = [x - LR * g for x, g in zip(w_k, g_w)]
    _, g_m = toy.loss_and_grad(mixed, batch)
    v = [x - alpha * LR * g for x, g in zip(v, g_m)]
    mixed = [alpha * a + (1 - alpha) * b for a, b in zip(v, w_k)]
  raw = _read_raw(write_path)
  np.testing.assert_allclose(raw[:MODEL_SIZE], _flat(v), atol=1e-5)
  np.testing.assert_allclose(raw[MODEL_SIZE:], _flat(mixed), atol=1e-5)
  np.testing.assert_allclose(
      _flat(toy.global_weights(process, output.state)), _flat(w_k), atol=1e-5
  )


def test_interpolated_evaluation_mixes_local_and_global(tmp_path):
  alpha = 0.25
  v = toy.random_weights(8)
  handle, _ = _state_data(tmp_path, 0, v)
  evaluate = finetuning.build_interpolated_evaluation(toy.model_fn, alpha)
  (metrics,) = evaluate(
      toy.model_weights(W_T),
      [
          collections.OrderedDict(
              batches=toy.fixed_batches(ARRAYS[1], BATCH), personal_state=handle
          )
      ],
  )
  mixed = [alpha * a + (1 - alpha) * b for a, b in zip(v, W_T)]
  loss, accuracy = toy.evaluate_reference(mixed, ARRAYS[1])
  n = ARRAYS[1]['y'].shape[0]
  assert float(metrics['loss_sum']) / n == pytest.approx(loss, abs=1e-5)
  assert float(metrics['num_correct']) / n == pytest.approx(accuracy)


# ------------------------------------------------------- EWC, SKL, plain


def _finetune_metrics(kind, strength, train, **extra):
  computation = finetuning.build_finetune_family_evaluation(
      toy.model_fn,
      kind,
      toy.sgd(LR),
      strength=strength,
      **extra.pop('options', {}),
  )
  data = collections.OrderedDict(train=train)
  data.update(extra)
  data['test'] = toy.fixed_batches(ARRAYS[1], BATCH)
  (metrics,) = computation(toy.model_weights(W_T), [data])
  return metrics


def _plain_finetune_metrics(train):
  computation = evaluation.build_finetune_evaluation(toy.model_fn, toy.sgd(LR))
  (metrics,) = computation(
      toy.model_weights(W_T),
      [
          collections.OrderedDict(
              train=train, test=toy.fixed_batches(ARRAYS[1], BATCH)
          )
      ],
  )
  return metrics


def _assert_metrics_equal(a, b):
  for key in ('loss_sum', 'num_correct', 'num_examples'):
    assert float(a[key]) == float(b[key]), key


def test_ewc_with_lambda_zero_is_plain_finetuning():
  train = toy.fixed_batches(ARRAYS[0], 2)  # 10 batches: 4 Fisher + 6 steps.
  ewc = _finetune_metrics('ewc', 0.0, train)
  plain = _plain_finetune_metrics(train.skip(finetuning.FISHER_BATCHES))
  _assert_metrics_equal(ewc, plain)
  assert float(_finetune_metrics('ewc', 5.0, train)['loss_sum']) != float(
      plain['loss_sum']
  )


def test_ewc_matches_numpy_with_fisher_penalty():
  lam = 3.0
  batches = toy.split_batches(ARRAYS[0], 2)
  fisher = [np.zeros(s) for s in toy.SHAPES]
  for batch in batches[:4]:
    _, g = toy.loss_and_grad(W_T, batch)
    fisher = [f + gi**2 / 4 for f, gi in zip(fisher, g)]
  v = [np.asarray(x, np.float64) for x in W_T]
  for batch in batches[4:]:
    _, g = toy.loss_and_grad(v, batch)
    v = [
        x - LR * (gi + lam * f * (x - c))
        for x, gi, f, c in zip(v, g, fisher, W_T)
    ]
  loss, _ = toy.evaluate_reference(v, ARRAYS[1])
  metrics = _finetune_metrics('ewc', lam, toy.fixed_batches(ARRAYS[0], 2))
  assert float(metrics['loss_sum']) / ARRAYS[1]['y'].shape[0] == (
      pytest.approx(loss, abs=1e-5)
  )


def test_skl_with_lambda_zero_is_plain_finetuning():
  train = toy.fixed_batches(ARRAYS[0], BATCH)
  skl = _finetune_metrics(
      'skl', 0.0, train, full_train=toy.fixed_batches(ARRAYS[0], 7)
  )
  _assert_metrics_equal(skl, _plain_finetune_metrics(train))


def test_skl_gradient_is_the_symmetric_kl_sum_over_the_training_set():
  lam = 0.05
  metrics = _finetune_metrics(
      'skl',
      lam,
      toy.fixed_batches(ARRAYS[0], BATCH).take(2),
      full_train=toy.fixed_batches(ARRAYS[0], 7),
  )

  def softmax(weights):
    kernel, bias = (np.asarray(w, np.float64) for w in weights)
    logits = ARRAYS[0]['x'] @ kernel + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  p_w = softmax(W_T)

  def symmetric_kl(flat):
    p_v = softmax(_unflat(flat))
    return float(np.sum((p_v - p_w) * (np.log(p_v) - np.log(p_w))))

  def kl_gradient(weights):  # Central differences of the numpy KL sum.
    flat = _flat(weights)
    gradient = np.zeros_like(flat)
    for i in range(flat.size):
      e = np.zeros_like(flat)
      e[i] = 1e-6
      gradient[i] = (symmetric_kl(flat + e) - symmetric_kl(flat - e)) / 2e-6
    return gradient

  assert np.abs(kl_gradient(W_T)).max() < 1e-4  # Minimal at v = w.
  v = [np.asarray(x, np.float64) for x in W_T]
  for batch in toy.split_batches(ARRAYS[0], BATCH)[:2]:
    _, g_ce = toy.loss_and_grad(v, batch)
    v = _unflat(_flat(v) - LR * (_flat(g_ce) + lam * kl_gradient(v)))
  # At the second step v != w: the KL term is active and must match.
  assert np.abs(kl_gradient(_unflat(_flat(toy.random_weights(5))))).max() > 0.1
  loss, _ = toy.evaluate_reference(v, ARRAYS[1])
  assert float(metrics['loss_sum']) / ARRAYS[1]['y'].shape[0] == (
      pytest.approx(loss, abs=1e-5)
  )
  without_kl = toy.sgd_reference(
      W_T, toy.split_batches(ARRAYS[0], BATCH)[:2], LR
  )
  assert abs(toy.evaluate_reference(without_kl, ARRAYS[1])[0] - loss) > 1e-4


def test_early_stopping_keeps_the_best_validation_weights():
  train_batches = toy.split_batches(ARRAYS[0], BATCH)
  validation = toy.client_arrays(9, 6, label_shift=2)  # Conflicting labels.
  v = [np.asarray(x, np.float64) for x in W_T]
  best, best_loss, since = v, toy.evaluate_reference(v, validation)[0], 0
  for batch in train_batches:
    _, g = toy.loss_and_grad(v, batch)
    v = [x - LR * gi for x, gi in zip(v, g)]
    loss = toy.evaluate_reference(v, validation)[0]
    if loss < best_loss:
      best, best_loss, since = v, loss, 0
    else:
      since += 1
      if since >= 1:
        break
  metrics = _finetune_metrics(
      'early_stopping',
      0.0,
      toy.fixed_batches(ARRAYS[0], BATCH),
      validation=toy.fixed_batches(validation, 4),
      options=dict(patience=1),
  )
  expected, _ = toy.evaluate_reference(best, ARRAYS[1])
  assert float(metrics['loss_sum']) / ARRAYS[1]['y'].shape[0] == (
      pytest.approx(expected, abs=1e-5)
  )
  full = _plain_finetune_metrics(toy.fixed_batches(ARRAYS[0], BATCH))
  assert float(full['loss_sum']) != float(metrics['loss_sum'])


# -------------------------------------------------------------- Per-FedAvg


def test_perfedavg_finite_difference_hvp_matches_autodiff():
  model = toy.model_fn()
  weights = tff.learning.models.ModelWeights.from_model(model)
  trainable = tuple(weights.trainable)
  for variable, value in zip(trainable, W_T):
    variable.assign(value)
  batch = toy.split_batches(ARRAYS[0], BATCH)[0]
  vector = tuple(tf.constant(x) for x in toy.random_weights(4))

  approx = perfedavg.finite_difference_hvp(
      model, trainable, batch, vector, perfedavg.FINITE_DIFFERENCE_DELTA
  )
  with tf.GradientTape() as outer:
    with tf.GradientTape() as inner:
      loss = model.forward_pass(batch, training=True).loss
    gradients = inner.gradient(loss, trainable)
    dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(gradients, vector)])
  exact = outer.gradient(dot, trainable)
  for a, e in zip(approx, exact):
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=0, atol=2e-3)
  assert max(float(tf.reduce_max(tf.abs(e))) for e in exact) > 0.05
  toy.assert_weights_equal([v.numpy() for v in trainable], W_T)


def test_perfedavg_round_matches_the_reference_meta_step():
  alpha, steps = 0.2, 2
  process = perfedavg.build_perfedavg_process(
      toy.model_fn, learning_rate=alpha, local_steps=steps
  )
  output = process.next(
      toy.with_global_weights(process, W_T),
      [collections.OrderedDict(batches=toy.fixed_batches(ARRAYS[0], 3))],
  )
  batches = toy.split_batches(ARRAYS[0], 3)
  w = [np.asarray(x, np.float64) for x in W_T]
  delta, beta = perfedavg.FINITE_DIFFERENCE_DELTA, perfedavg.META_LEARNING_RATE
  for j in range(steps):
    b1, b2, b3 = batches[3 * j : 3 * j + 3]
    _, g1 = toy.loss_and_grad(w, b1)
    _, g = toy.loss_and_grad([x - alpha * gi for x, gi in zip(w, g1)], b2)
    _, plus = toy.loss_and_grad([x + delta * gi for x, gi in zip(w, g)], b3)
    _, minus = toy.loss_and_grad([x - delta * gi for x, gi in zip(w, g)], b3)
    hg = [(p - m) / (2 * delta) for p, m in zip(plus, minus)]
    w = [x - beta * gi + alpha * beta * h for x, gi, h in zip(w, g, hg)]
  np.testing.assert_allclose(
      _flat(toy.global_weights(process, output.state)), _flat(w), atol=1e-5
  )


def test_hvp_check_script_finds_finite_differences_exact_on_a_smooth_model(
    tmp_path,
):
  """scripts/check_hessian_vector_product.py on Synthetic (logistic model)."""

  root = repo_paths.REPO
  output = tmp_path / 'hvp.csv'
  completed = subprocess.run(
      [
          sys.executable,
          os.path.join(root, 'scripts', 'check_hessian_vector_product.py'),
          '--dataset=synthetic',
          '--clients=5',
          '--deltas=1e-3',
          f'--output={output}',
      ],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  frame = pd.read_csv(output)
  assert frame.client_id.nunique() == 5
  # Where delta * g is not lost in float32 round-off (a saturated client's
  # gradient can be ~1e-13), the difference quotient is the exact product.
  measurable = frame[frame.gradient_norm > 0.01]
  assert len(measurable) >= 3
  assert (measurable.relative_error < 1e-3).all(), measurable


# ------------------------------------------------------------------ MAPPER


def _mapper_reference(v, w, arrays, steps):
  """numpy MAPPER client: (best v, best lambda, new w_k)."""
  batches = toy.split_batches(arrays, BATCH)
  block = steps + 1
  best_loss, best_lam, best_v, scores = 10000.0, 0.0, v, []
  for c, lam in enumerate(mapper.CANDIDATE_LAMBDAS):
    u = [np.asarray(x, np.float64) for x in v]
    for batch in batches[c * block : (c + 1) * block]:
      mixed = [lam * a + (1 - lam) * b for a, b in zip(u, w)]
      _, g = toy.loss_and_grad(mixed, batch)
      u = [x - LR * lam * gi for x, gi in zip(u, g)]
    score, _ = toy.evaluate_reference(mixed, arrays)
    scores.append(score)
    if score < best_loss:
      best_loss, best_lam, best_v = score, lam, u
  last = batches[len(mapper.CANDIDATE_LAMBDAS) * block - 1]
  mixed = [best_lam * a + (1 - best_lam) * b for a, b in zip(best_v, w)]
  _, g = toy.loss_and_grad(mixed, last)
  new_w = [b - LR * (1 - best_lam) * gi for b, gi in zip(w, g)]
  return best_v, best_lam, new_w, scores


def test_mapper_keeps_the_lambda_with_the_lowest_training_loss(tmp_path):
  steps = 1
  process = mapper.build_mapper_process(
      toy.model_fn, learning_rate=LR, local_steps=steps
  )
  data, paths, expected = [], [], []
  for k, arrays in enumerate(ARRAYS):
    arrays = toy.client_arrays(20 + k, 6 * BATCH, label_shift=k)
    v = toy.random_weights(30 + k, scale=2.0)
    handle, write_path = _state_data(tmp_path, k, v)
    data.append(
        collections.OrderedDict(
            batches=toy.fixed_batches(arrays, BATCH),
            personal_state=handle,
            full_train=toy.fixed_batches(arrays, 7),
        )
    )
    paths.append(write_path)
    expected.append(_mapper_reference(v, W_T, arrays, steps))
  output = process.next(toy.with_global_weights(process, W_T), data)
  chosen = set()
  for path, (best_v, best_lam, _, scores) in zip(paths, expected):
    raw = _read_raw(path)
    assert raw.shape == (MODEL_SIZE + 1,)
    assert raw[-1] == pytest.approx(best_lam)
    assert best_lam == mapper.CANDIDATE_LAMBDAS[int(np.argmin(scores))]
    np.testing.assert_allclose(raw[:MODEL_SIZE], _flat(best_v), atol=1e-5)
    chosen.add(best_lam)
  # Every client's update is aggregated (not only the last one's).
  mean_new_w = np.mean([_flat(e[2]) for e in expected], axis=0)
  np.testing.assert_allclose(
      _flat(toy.global_weights(process, output.state)), mean_new_w, atol=1e-5
  )


# ------------------------------------------------- ExperimentRunner wiring


@pytest.fixture(scope='module')
def synthetic():
  from tff_ditto import models
  from tff_ditto.data import load_dataset

  full = load_dataset('synthetic')
  return (
      full.subset(full.client_ids[:6]),
      models.get_model_spec('synthetic', seed=0).tff_model_fn(),
  )


def _run_method(synthetic, output_dir, **overrides):
  from tff_ditto import training
  from tff_ditto import training_config

  dataset, model_fn = synthetic
  values = dict(
      rounds=2,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      lam=0.5,
      eval_every=2,
      checkpoint_every=1,
      finetune_steps=3,
      seed=0,
  )
  values.update(overrides)
  runner = training.ExperimentRunner(
      training_config.ExperimentConfig(**values),
      dataset,
      model_fn,
      str(output_dir),
      log_fn=None,
  )
  return runner, runner.run()


@pytest.mark.parametrize(
    'method',
    [
        'term',
        'l2sgd',
        'apfl',
        'ewc',
        'skl',
        'perfedavg',
        'mapper',
        'finetune_es',
    ],
)
def test_every_baseline_runs_in_the_experiment_runner(
    synthetic, tmp_path, method
):
  runner, summary = _run_method(synthetic, tmp_path / method, method=method)
  final = summary['final']
  assert 0.0 <= final['benign_mean_accuracy'] <= 1.0
  assert final['benign_num_clients'] == 6
  assert np.isfinite(final['benign_pooled_loss'])
  if method in ('l2sgd', 'apfl', 'mapper'):
    sampled = runner.store.versions >= 0
    assert sampled.any() and not sampled.all()


def test_term_with_t_zero_equals_global_in_the_runner(synthetic, tmp_path):
  fedavg, _ = _run_method(synthetic, tmp_path / 'global', method='global')
  tilted, _ = _run_method(
      synthetic, tmp_path / 'term', method='term', term_t=0.0
  )
  toy.assert_weights_equal(
      fedavg.process.get_model_weights(fedavg.state).trainable,
      tilted.process.get_model_weights(tilted.state).trainable,
  )


def test_perfedavg_alpha_sets_the_inner_step(synthetic, tmp_path):
  def trained(name, **overrides):
    runner, _ = _run_method(
        synthetic,
        tmp_path / name,
        method='perfedavg',
        client_lr=0.05,
        **overrides,
    )
    return runner.process.get_model_weights(runner.state).trainable

  default = trained('default')
  toy.assert_weights_equal(default, trained('same', perfedavg_alpha=0.05))
  smaller = trained('smaller', perfedavg_alpha=0.005)
  assert not all(np.allclose(a, b) for a, b in zip(default, smaller))


@pytest.mark.parametrize(
    'field, value, method',
    [
        ('perfedavg_alpha', 0.01, 'perfedavg'),
        ('skl_lam', 0.001, 'skl'),
        ('ewc_lam', 0.5, 'ewc'),
    ],
)
def test_only_the_reading_method_keeps_a_method_only_field(
    field, value, method
):
  from tff_ditto import config_equivalence
  from tff_ditto import training_config

  default = getattr(training_config.ExperimentConfig(), field)
  assert default != value
  for config_method, expected in (
      (method, value),
      ('ditto', default),
      ('global', default),
  ):
    config = training_config.ExperimentConfig(
        method=config_method, **{field: value}
    )
    assert (
        getattr(config_equivalence.effective_config(config), field) == expected
    )


@pytest.mark.parametrize(
    'overrides',
    [
        dict(method='term', aggregator='median'),
        dict(method='term', bucketing_size=2),
        dict(method='term', attack='alie', attack_ratio=0.2),
        dict(method='apfl', aggregator='k_loss'),
        dict(method='mapper', weighted_aggregation=True),
        dict(method='apfl', apfl_alpha=1.5),
        dict(method='perfedavg', perfedavg_alpha=0.0),
        dict(method='term', term_t=-1.0),
        dict(method='finetune_es', finetune_patience=0),
    ],
)
def test_config_rejects_settings_the_baselines_cannot_honour(overrides):
  from tff_ditto import training_config

  with pytest.raises(ValueError):
    training_config.ExperimentConfig(**overrides).validate()
  training_config.ExperimentConfig(method=overrides['method']).validate()

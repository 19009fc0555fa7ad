"""Tests of the per-device lambda selections (`--lam=auto`, `--lam=per_step`).

Real TFF computations on tiny problems: a Ditto process with several lambdas
trains one personal model per lambda, each exactly the model a single-lambda
process trains; clients then pick by their own validation loss. With per-step
selection one personal model takes, at every step, the candidate step with
the lowest validation loss, checked against a numpy computation.
"""

import collections
import os

import numpy as np
import pandas as pd
import pytest

import toy
from tff_ditto import client_states
from tff_ditto import evaluation
from tff_ditto import lambda_policy
from tff_ditto import models
from tff_ditto import round_data
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.data import load_dataset

LR = 0.1
STEPS = 3
BATCH = 4
W_T = toy.random_weights(1)
V_K = toy.random_weights(2)
ARRAYS = toy.client_arrays(0, 3 * BATCH)


def _one_client_round(process, start_personal, tmp_path, tag):
  read_path = os.path.join(tmp_path, f'{tag}_read.state')
  write_path = os.path.join(tmp_path, f'{tag}_write.state')
  client_states.write_flat_state(
      read_path, client_states.flatten_weights(start_personal)
  )
  batches = toy.fixed_batches(ARRAYS, BATCH)
  output = process.next(
      toy.with_global_weights(process, W_T),
      [toy.personal_client_data(batches, read_path, write_path)],
  )
  return output, client_states.read_flat_state(write_path)


def test_each_candidate_model_equals_its_single_lambda_run(tmp_path):
  lambdas = (0.0, 0.5, 4.0)
  # Different starting personal models per candidate, stored one after the other.
  starts = [toy.random_weights(10 + i) for i in range(len(lambdas))]
  joint = toy.build_process(lr=LR, personal_lambda=lambdas, local_steps=STEPS)
  joint_output, joint_state = _one_client_round(
      joint, [w for start in starts for w in start], tmp_path, 'joint'
  )
  size = client_states.flatten_weights(W_T).size
  assert joint_state.shape == (len(lambdas) * size,)
  for i, lam in enumerate(lambdas):
    single = toy.build_process(lr=LR, personal_lambda=lam, local_steps=STEPS)
    single_output, single_state = _one_client_round(
        single, starts[i], tmp_path, f'single{i}'
    )
    np.testing.assert_allclose(
        joint_state[i * size : (i + 1) * size], single_state, rtol=0, atol=1e-6
    )
    # The global model does not depend on the personal models.
    toy.assert_weights_close(
        toy.global_weights(joint, joint_output.state),
        toy.global_weights(single, single_output.state),
        atol=0,
    )
  # Independent check of one candidate against numpy Algorithm 1.
  batches = toy.split_batches(ARRAYS, BATCH)
  expected = toy.sgd_reference(starts[2], batches, LR, center=W_T, lam=4.0)
  np.testing.assert_allclose(
      joint_state[2 * size :],
      client_states.flatten_weights(expected),
      atol=1e-5,
  )


def test_build_rejects_bad_lambdas():
  with pytest.raises(ValueError, match='empty'):
    toy.build_process(personal_lambda=())
  with pytest.raises(ValueError, match='>= 0'):
    toy.build_process(personal_lambda=(0.1, -1.0))


def test_select_personal_models_by_validation_loss():
  validation = dict(
      # clients x lambdas (0.1, 1, 2)
      loss_sum=np.array([
          [3.0, 2.0, 4.0],  # 10 examples: mean loss lowest at lambda 1
          [9.0, 8.0, 1.0],  # lowest at lambda 2
          [0.1, 9.0, 9.0],  # only 3 examples: fallback lambda 1
          [5.0, 5.0, 5.0],  # tie: the first lambda
          [0.0, 0.0, 0.0],  # no validation data: fallback
      ]),
      num_examples=np.array(
          [[10.0] * 3, [10.0] * 3, [3.0] * 3, [4.0] * 3, [0.0] * 3]
      ),
      num_correct=np.zeros([5, 3]),
  )
  chosen = evaluation.select_personal_models(
      validation,
      (0.1, 1.0, 2.0),
      fallback_lambda=1.0,
      min_validation_examples=4,
  )
  np.testing.assert_array_equal(chosen, [1, 2, 1, 0, 1])
  test = dict(
      num_correct=np.arange(15.0).reshape(5, 3),
      num_examples=np.full([5, 3], 20.0),
      loss_sum=np.ones([5, 3]),
  )
  taken = evaluation.take_personal_model(test, chosen)
  np.testing.assert_array_equal(
      taken['num_correct'], [1.0, 5.0, 7.0, 9.0, 13.0]
  )
  with pytest.raises(ValueError, match='not in'):
    evaluation.select_personal_models(validation, (0.1, 2.0), 1.0, 4)


def test_candidates_follow_the_paper():
  assert lambda_policy.lambda_candidates(False) == (0.1, 1.0, 2.0)
  assert lambda_policy.lambda_candidates(True) == (0.05, 0.1, 0.2)
  assert lambda_policy.fallback_lambda(False) == 1.0
  assert lambda_policy.fallback_lambda(True) == 0.1


def _evaluate_every_client(runner, model_fn, arrays, num_models):
  """Every client's personal models on `arrays`, through the per-client
  evaluation (independent of the runner's all-clients computation)."""
  per_client_evaluation = evaluation.build_personalized_evaluation(
      model_fn, num_personal_models=num_models
  )
  return evaluation.stack_client_metrics(
      per_client_evaluation([
          collections.OrderedDict(
              batches=round_data.eval_batches(arrays[c], 100),
              personal_state=round_data.state_handle_dataset(
                  client_states.ClientStateHandle(runner.store.read_path(i), '')
              ),
          )
          for i, c in enumerate(runner.dataset.client_ids)
      ])
  )


def test_runner_with_auto_lambda_picks_per_client(tmp_path):
  full = load_dataset('synthetic', validation_fraction=0.2)
  dataset = full.subset(full.client_ids[:6])
  model_fn = models.get_model_spec('synthetic', seed=0).tff_model_fn()
  config = training_config.ExperimentConfig(
      method='ditto',
      rounds=3,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      lam_selection='auto',
      eval_every=3,
      checkpoint_every=1,
  )
  runner = training.ExperimentRunner(
      config, dataset, model_fn, str(tmp_path / 'auto'), log_fn=None
  )
  assert runner.personal_models.lambdas == (0.1, 1.0, 2.0)
  summary = runner.run()
  table = pd.read_csv(tmp_path / 'auto' / 'client_metrics.csv')
  assert set(table['lam']) <= {0.1, 1.0, 2.0}
  # The choice is the validation-loss argmin, recomputed independently here.
  validation = _evaluate_every_client(runner, model_fn, dataset.validation, 3)
  counts = validation['num_examples'][:, 0]
  mean_loss = validation['loss_sum'] / np.maximum(validation['num_examples'], 1)
  expected = np.where(
      counts < 4, 1.0, np.array([0.1, 1.0, 2.0])[np.argmin(mean_loss, axis=1)]
  )
  np.testing.assert_array_equal(table['lam'].to_numpy(), expected)
  shares = [summary['final'][f'benign_share_lam_{v:g}'] for v in (0.1, 1, 2)]
  assert sum(shares) == pytest.approx(1.0)
  # Three personal models per client are stored.
  assert len(runner.personalized_weights(0)) == 3 * len(
      model_fn().trainable_variables + model_fn().non_trainable_variables
  )
  # The reported accuracy is that of the chosen models.
  test_metrics = _evaluate_every_client(runner, model_fn, dataset.test, 3)
  chosen = np.searchsorted([0.1, 1.0, 2.0], expected)
  taken = evaluation.take_personal_model(test_metrics, chosen)
  np.testing.assert_allclose(
      table['num_correct'].to_numpy(), taken['num_correct']
  )
  # Each candidate is also summarized on its own.
  for index, value in enumerate((0.1, 1.0, 2.0)):
    expected_pooled = (
        test_metrics['num_correct'][:, index].sum()
        / test_metrics['num_examples'][:, index].sum()
    )
    assert summary['final'][f'benign_lam_{value:g}_pooled_accuracy'] == (
        pytest.approx(expected_pooled)
    )


def test_auto_lambda_is_ignored_by_other_methods(tmp_path):
  full = load_dataset('synthetic')
  dataset = full.subset(full.client_ids[:4])
  model_fn = models.get_model_spec('synthetic', seed=0).tff_model_fn()
  config = training_config.ExperimentConfig(
      method='local',
      rounds=1,
      clients_per_round=2,
      local_steps=1,
      lam_selection='auto',
  )
  runner = training.ExperimentRunner(
      config, dataset, model_fn, str(tmp_path / 'local'), log_fn=None
  )
  assert runner.personal_models.lambdas == (0.0,)


# ------------------------------------------------ per-step selection (A.5)

CANDIDATES = (0.1, 1.0, 2.0)
# Chosen so that the kept candidate changes between the two steps (2, then
# 0.1) with clear validation-loss gaps; see test_per_step_... below.
PER_STEP_W_T = toy.random_weights(1)
PER_STEP_V_K = toy.random_weights(4)
PER_STEP_TRAIN = toy.client_arrays(0, 2 * BATCH)
PER_STEP_VALIDATION = toy.client_arrays(9, 10, label_shift=2)


def _per_step_round(process, clients, tmp_path, tag):
  """One `next` of a per-step process from PER_STEP_W_T.

  Args:
    process: A Ditto process; per-step selection iff `validation` is given.
    clients: List of (start personal weights, train arrays, validation
      arrays or None).
    tmp_path: Directory of the state files.
    tag: Distinguishes file names.

  Returns:
    (process output, written personal weights per client).
  """
  data, write_paths = [], []
  for k, (start, train, validation) in enumerate(clients):
    read_path = os.path.join(tmp_path, f'{tag}_read_{k}.state')
    write_path = os.path.join(tmp_path, f'{tag}_write_{k}.state')
    toy.write_state(read_path, start)
    client = toy.personal_client_data(
        toy.fixed_batches(train, BATCH), read_path, write_path
    )
    if validation is not None:
      client['validation'] = toy.fixed_batches(validation, 3)
    data.append(client)
    write_paths.append(write_path)
  output = process.next(toy.with_global_weights(process, PER_STEP_W_T), data)
  return output, [toy.read_state(path) for path in write_paths]


def _numpy_per_step(start, batches, validation, lambdas, lr):
  """Independent per-step selection: (final v, kept indices, smallest gap)."""
  v = [np.asarray(w, np.float64) for w in start]
  kept, gaps = [], []
  for batch in batches:
    _, grads = toy.loss_and_grad(v, batch)
    tentative = [
        [
            x - lr * (g + lam * (x - c))
            for x, g, c in zip(v, grads, PER_STEP_W_T)
        ]
        for lam in lambdas
    ]
    losses = [toy.loss_and_grad(t, validation)[0] for t in tentative]
    kept.append(int(np.argmin(losses)))
    gaps.append(np.sort(losses)[1] - np.sort(losses)[0])
    v = tentative[kept[-1]]
  return v, kept, min(gaps)


def test_per_step_with_one_candidate_is_fixed_lambda_ditto(tmp_path):
  fixed = toy.build_process(lr=LR, personal_lambda=0.5, local_steps=STEPS)
  per_step = toy.build_process(
      lr=LR,
      personal_lambda=(0.5,),
      local_steps=STEPS,
      select_lambda_per_step=True,
  )
  train = toy.client_arrays(0, STEPS * BATCH)
  fixed_output, (fixed_v,) = _per_step_round(
      fixed, [(V_K, train, None)], tmp_path, 'fixed'
  )
  per_step_output, (per_step_v,) = _per_step_round(
      per_step, [(V_K, train, PER_STEP_VALIDATION)], tmp_path, 'per_step'
  )
  toy.assert_weights_equal(per_step_v, fixed_v)
  assert toy.distance(per_step_v, V_K) > 1e-2  # it trained
  toy.assert_weights_equal(
      toy.global_weights(per_step, per_step_output.state),
      toy.global_weights(fixed, fixed_output.state),
  )
  fixed_train = fixed_output.metrics['client_work']['train']
  per_step_train = per_step_output.metrics['client_work']['train']
  for key, value in fixed_train.items():
    assert per_step_train[key] == value, key
  np.testing.assert_array_equal(per_step_train['lambda_step_shares'], [1, 0])


def test_per_step_keeps_the_lowest_validation_loss_step(tmp_path):
  process = toy.build_process(
      lr=LR,
      personal_lambda=CANDIDATES,
      local_steps=2,
      select_lambda_per_step=True,
      fallback_lambda=1.0,
  )
  few = toy.client_arrays(3, 3)  # below the 4 examples needed to select
  output, (selected, fallback) = _per_step_round(
      process,
      [
          (PER_STEP_V_K, PER_STEP_TRAIN, PER_STEP_VALIDATION),
          (PER_STEP_V_K, PER_STEP_TRAIN, few),
      ],
      tmp_path,
      'per_step',
  )
  batches = toy.split_batches(PER_STEP_TRAIN, BATCH)
  expected, kept, gap = _numpy_per_step(
      PER_STEP_V_K, batches, PER_STEP_VALIDATION, CANDIDATES, LR
  )
  # The setting is informative: the choice changes between steps, and the
  # losses are far apart compared with float32 rounding.
  assert kept == [2, 0] and gap > 1e-3
  toy.assert_weights_close(selected, expected, atol=1e-5)
  for lam in CANDIDATES:  # no fixed lambda gives the same model
    fixed = toy.sgd_reference(
        PER_STEP_V_K, batches, LR, center=PER_STEP_W_T, lam=lam
    )
    assert toy.distance(selected, fixed) > 1e-3
  # Too little validation data: plain steps with the fallback lambda.
  toy.assert_weights_close(
      fallback,
      toy.sgd_reference(
          PER_STEP_V_K, batches, LR, center=PER_STEP_W_T, lam=1.0
      ),
      atol=1e-5,
  )
  # The global model is FedAvg's, untouched by the selection.
  w_expected = toy.sgd_reference(PER_STEP_W_T, batches, LR)
  toy.assert_weights_close(
      toy.global_weights(process, output.state), w_expected, atol=1e-5
  )
  # Shares of the 4 personal steps: 2 and 0.1 once each, 2 fallback steps.
  np.testing.assert_allclose(
      output.metrics['client_work']['train']['lambda_step_shares'],
      [0.25, 0.0, 0.25, 0.5],
  )


def test_per_step_rejects_bad_settings():
  with pytest.raises(ValueError, match='fallback_lambda 0.5 must be one of'):
    toy.build_process(
        personal_lambda=CANDIDATES,
        select_lambda_per_step=True,
        fallback_lambda=0.5,
    )
  with pytest.raises(ValueError, match='fallback_lambda None'):
    toy.build_process(personal_lambda=CANDIDATES, select_lambda_per_step=True)
  with pytest.raises(ValueError, match='personalize=True'):
    toy.build_process(
        personal_lambda=(1.0,),
        select_lambda_per_step=True,
        personalize=False,
    )
  with pytest.raises(ValueError, match='strong_attack'):
    training_config.ExperimentConfig(strong_attack=True, lam=1.0).validate()
  training_config.ExperimentConfig(
      strong_attack=True, lam_selection='per_step'
  ).validate()
  with pytest.raises(ValueError, match='lam_selection must be one of'):
    training_config.ExperimentConfig(lam_selection='per_round').validate()


def test_per_step_needs_validation_data(tmp_path):
  full = load_dataset('synthetic', validation_fraction=0.0)
  dataset = full.subset(full.client_ids[:3])
  model_fn = models.get_model_spec('synthetic', seed=0).tff_model_fn()
  config = training_config.ExperimentConfig(
      method='ditto', rounds=1, clients_per_round=2, lam_selection='per_step'
  )
  with pytest.raises(ValueError, match='no client of .* has >= 4 validation'):
    training.ExperimentRunner(
        config, dataset, model_fn, str(tmp_path / 'x'), log_fn=None
    )
  assert not (tmp_path / 'x').exists()


def test_runner_with_per_step_lambda(tmp_path):
  full = load_dataset('synthetic', validation_fraction=0.2)
  dataset = full.subset(full.client_ids[:6])
  model_fn = models.get_model_spec('synthetic', seed=0).tff_model_fn()
  config = training_config.ExperimentConfig(
      method='ditto',
      rounds=2,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      lam_selection='per_step',
      eval_every=1,
  )
  runner = training.ExperimentRunner(
      config, dataset, model_fn, str(tmp_path / 'per_step'), log_fn=None
  )
  assert runner.personal_models.lambdas == (0.1, 1.0, 2.0)
  summary = runner.run()
  share_keys = [f'step_share_lam_{v:g}' for v in (0.1, 1, 2)]
  share_keys.append('step_share_fallback')
  metrics = pd.read_csv(tmp_path / 'per_step' / 'metrics.csv')
  assert len(metrics) == 2
  for _, row in metrics.iterrows():
    shares = row[share_keys].to_numpy(np.float64)
    assert shares.min() >= 0 and shares.sum() == pytest.approx(1.0)
    assert np.isfinite(row['benign_mean_accuracy'])
  # Clients with >= 4 validation examples select (the first 6 all do).
  assert (dataset.num_validation_examples() >= 4).all()
  assert (metrics['step_share_fallback'] == 0).all()
  # One personal model per client, evaluated as such: no per-candidate
  # columns, no chosen lambda per client.
  assert len(runner.personalized_weights(0)) == len(
      model_fn().trainable_variables + model_fn().non_trainable_variables
  )
  assert not [k for k in summary['final'] if 'lam' in k]
  table = pd.read_csv(tmp_path / 'per_step' / 'client_metrics.csv')
  assert 'lam' not in table.columns
  test_metrics = _evaluate_every_client(runner, model_fn, dataset.test, 1)
  np.testing.assert_allclose(
      table['num_correct'].to_numpy(), test_metrics['num_correct']
  )
  assert 0.0 < summary['final']['benign_pooled_accuracy'] <= 1.0

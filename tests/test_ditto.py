"""Tests for tff_ditto.ditto and tff_ditto.ditto_client: Ditto's round as a
composed TFF LearningProcess.

Everything runs real TFF computations on the toy linear model of `toy.py`;
the expected values come from an independent numpy (float64) implementation
of Algorithm 1 of Li et al. (ICML 2021).
"""

import collections
import os

import numpy as np
import pytest
import tensorflow_federated as tff

import toy
from tff_ditto import aggregators
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import ditto
from tff_ditto import ditto_client

LR = 0.1
LAM = 0.5
STEPS = 3
BATCH = 4


def _run(process, w_t, clients, tmp_path, tag='r', state=None):
  """One `next` with the given clients; returns (output, written personal).

  Args:
    process: A Ditto process.
    w_t: Global weights to start from (ignored if `state` is given).
    clients: List of (arrays, v_k or None); v_k is written to a read file
      (None: pass plain batches, for personalize=False processes).
    tmp_path: Directory for the state files.
    tag: Distinguishes the file names of different calls.
    state: Optional process state to start from.
  """
  if state is None:
    state = toy.with_global_weights(process, w_t)
  data, write_paths = [], []
  for k, (arrays, v_k) in enumerate(clients):
    batches = toy.fixed_batches(arrays, BATCH)
    if v_k is None:
      data.append(batches)
      continue
    read_path = os.path.join(tmp_path, f'{tag}_read_{k}.state')
    write_path = os.path.join(tmp_path, f'{tag}_write_{k}.state')
    toy.write_state(read_path, v_k)
    data.append(toy.personal_client_data(batches, read_path, write_path))
    write_paths.append(write_path)
  output = process.next(state, data)
  return output, [toy.read_state(p) for p in write_paths]


@pytest.fixture(scope='module')
def process():
  return toy.build_process(lr=LR, personal_lambda=LAM, local_steps=STEPS)


@pytest.fixture(scope='module')
def global_only_process():
  return toy.build_process(
      lr=LR, personal_lambda=LAM, local_steps=STEPS, personalize=False
  )


W_T = toy.random_weights(1)
V_K = toy.random_weights(2)
ARRAYS = toy.client_arrays(0, 3 * BATCH)  # exactly 3 batches
OTHER_ARRAYS = toy.client_arrays(5, 2 * BATCH, label_shift=1)  # 2 batches


# ------------------------------------------------------- Algorithm 1 exactly


def test_one_round_matches_algorithm_1(process, tmp_path):
  output, (written,) = _run(process, W_T, [(ARRAYS, V_K)], tmp_path)
  batches = toy.split_batches(ARRAYS, BATCH)
  assert len(batches) == 3
  # v <- v - lr (grad F(v; b) + lam (v - w_t)), w <- w - lr grad F(w; b).
  v_expected = toy.sgd_reference(V_K, batches, LR, center=W_T, lam=LAM)
  w_expected = toy.sgd_reference(W_T, batches, LR)
  toy.assert_weights_close(written, v_expected, atol=1e-5)
  # One client, server SGD lr 1: w_{t+1} = w_t - (w_t - w_final) = w_final.
  new_global = toy.global_weights(process, output.state)
  toy.assert_weights_close(new_global, w_expected, atol=1e-5)
  # The two models really moved differently (lambda pulls v towards w_t).
  assert toy.distance(written, v_expected) < 1e-4 < toy.distance(written, V_K)
  assert toy.distance(new_global, W_T) > 1e-2

  train = output.metrics['client_work']['train']
  assert train['num_examples'] == 12.0
  assert train['num_batches'] == 3.0
  assert train['num_clients'] == 1.0
  assert train['non_finite_updates'] == 0.0
  expected_global_loss = np.mean([
      toy.loss_and_grad(toy.sgd_reference(W_T, batches[:i], LR), b)[0]
      for i, b in enumerate(batches)
  ])
  expected_personal_loss = np.mean([
      toy.loss_and_grad(
          toy.sgd_reference(V_K, batches[:i], LR, center=W_T, lam=LAM), b
      )[0]
      for i, b in enumerate(batches)
  ])
  np.testing.assert_allclose(
      train['global_train_loss'], expected_global_loss, rtol=1e-5
  )
  np.testing.assert_allclose(
      train['personal_train_loss'], expected_personal_loss, rtol=1e-5
  )


def test_local_steps_truncates_the_batches(tmp_path):
  process = toy.build_process(lr=LR, personal_lambda=LAM, local_steps=2)
  output, (written,) = _run(process, W_T, [(ARRAYS, V_K)], tmp_path)
  batches = toy.split_batches(ARRAYS, BATCH)[:2]
  toy.assert_weights_close(
      written, toy.sgd_reference(V_K, batches, LR, center=W_T, lam=LAM)
  )
  toy.assert_weights_close(
      toy.global_weights(process, output.state),
      toy.sgd_reference(W_T, batches, LR),
  )
  assert output.metrics['client_work']['train']['num_batches'] == 2.0


@pytest.mark.parametrize(
    'kwargs',
    [
        dict(personal_lambda=-1.0),
        dict(global_proximal_strength=-0.1),
        dict(local_steps=0),
    ],
)
def test_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    toy.build_process(**kwargs)


# ------------------------------------------------ client state in the files


def _state_bytes(path):
  return [open(f, 'rb').read() for f in client_states.state_files(path)]


def test_unsampled_client_keeps_its_state_file(process, tmp_path):
  store = client_states.FileClientStateStore(str(tmp_path / 'states'), 3, W_T)
  initial_path = store.read_path(2)
  initial_bytes = _state_bytes(initial_path)
  arrays = [toy.client_arrays(10 + k, 3 * BATCH) for k in range(3)]

  def run_round(state, round_num, indices):
    handles = store.handles(indices, round_num)
    data = [
        toy.personal_client_data(
            toy.fixed_batches(arrays[i], BATCH), h.read_path, h.write_path
        )
        for i, h in zip(indices, handles)
    ]
    state = process.next(state, data).state
    store.commit(indices, round_num)
    return state

  state = toy.with_global_weights(process, W_T)
  state = run_round(state, 0, [0, 1])
  np.testing.assert_array_equal(
      store.versions, [0, 0, client_states.INITIAL_VERSION]
  )
  path_1 = store.read_path(1)
  bytes_1 = _state_bytes(path_1)
  weights_0_round_0 = store.read(0)

  state = run_round(state, 1, [0, 2])
  # Client 1 was not sampled: same version, same file, same bytes, no new file.
  np.testing.assert_array_equal(store.versions, [1, 0, 1])
  assert store.read_path(1) == path_1
  assert _state_bytes(path_1) == bytes_1
  assert sorted(os.listdir(os.path.dirname(path_1))) == toy.state_file_names(
      'round_000000'
  )
  # The shared initial model is untouched although client 2 trained from it.
  assert _state_bytes(initial_path) == initial_bytes
  toy.assert_weights_equal(store.read(1), toy.read_state(path_1))
  # Client 0 trained again, from its own round-0 model.
  expected_0 = toy.sgd_reference(
      weights_0_round_0,
      toy.split_batches(arrays[0], BATCH),
      LR,
      center=_round_0_global(arrays, [0, 1]),
      lam=LAM,
  )
  toy.assert_weights_close(store.read(0), expected_0, atol=1e-5)


def _round_0_global(arrays, indices):
  """Numpy global model after round 0 (mean of the clients' local models)."""
  finals = [
      toy.sgd_reference(W_T, toy.split_batches(arrays[i], BATCH), LR)
      for i in indices
  ]
  return [np.mean([f[j] for f in finals], axis=0) for j in range(2)]


def test_store_refuses_to_retrain_a_round_and_checks_writes(tmp_path):
  store = client_states.FileClientStateStore(str(tmp_path), 2, W_T)
  (handle,) = store.handles([0], 0)
  with pytest.raises(RuntimeError, match='did not write'):
    store.commit([0], 0)
  toy.write_state(handle.write_path, V_K)
  store.commit([0], 0)
  with pytest.raises(ValueError, match='already has state'):
    store.handles([0], 0)
  toy.assert_weights_equal(store.read(0), V_K)
  toy.assert_weights_equal(store.read(1), W_T)
  with pytest.raises(FileNotFoundError):
    store.restore(np.array([0, 3], np.int32))
  with pytest.raises(ValueError):
    store.restore(np.array([0], np.int32))


def test_store_prune_keeps_exactly_the_needed_versions(tmp_path):
  store = client_states.FileClientStateStore(str(tmp_path), 1, W_T)
  for round_num in range(4):
    (handle,) = store.handles([0], round_num)
    toy.write_state(handle.write_path, toy.random_weights(round_num))
  store.versions[0] = 2  # round 3 was written but never committed
  store.prune(np.array([1], np.int32))
  names = sorted(os.listdir(tmp_path / 'client_000000'))
  assert names == toy.state_file_names('round_000001', 'round_000002')
  assert client_states.state_exists(str(tmp_path / 'initial.state'))


# ------------------------------------------------- v_k never leaves clients


def _placements(type_spec):
  """All (placement, member type) pairs of federated types inside type_spec."""
  if isinstance(type_spec, tff.FederatedType):
    return [(type_spec.placement, type_spec.member)]
  if isinstance(type_spec, tff.StructType):
    found = []
    for _, element in tff.structure.to_elements(type_spec):
      found.extend(_placements(element))
    return found
  return []


def _tensor_dtypes(type_spec):
  if isinstance(type_spec, tff.TensorType):
    return [np.dtype(type_spec.dtype)]
  if isinstance(type_spec, tff.SequenceType):
    return _tensor_dtypes(type_spec.element)
  if isinstance(type_spec, tff.StructType):
    return [
        d
        for _, e in tff.structure.to_elements(type_spec)
        for d in _tensor_dtypes(e)
    ]
  raise AssertionError(f'unexpected type {type_spec}')


def test_type_signature_keeps_personal_models_on_clients(process):
  signature = process.next.type_signature
  inputs = _placements(signature.parameter)
  clients_inputs = [m for p, m in inputs if p is tff.CLIENTS]
  assert len(clients_inputs) == 1
  (client_data,) = clients_inputs
  assert client_data == client_data_schema.client_data_type(
      toy.model_fn, personalize=True
  )
  # The personal state crossing TFF is only file paths: strings, no weights.
  assert set(_tensor_dtypes(client_data[client_data_schema.STATE_KEY])) == {
      np.dtype(np.str_)
  }
  assert [p for p, _ in inputs if p is not tff.CLIENTS] == [tff.SERVER]

  outputs = _placements(signature.result)
  assert outputs and all(p is tff.SERVER for p, _ in outputs)


def test_global_model_ignores_personal_models(process, tmp_path):
  garbage = [
      1e3 * np.random.default_rng(7).normal(size=s).astype(np.float32)
      for s in toy.SHAPES
  ]
  clients_normal = [(ARRAYS, V_K), (OTHER_ARRAYS, toy.random_weights(3))]
  clients_garbage = [(ARRAYS, garbage), (OTHER_ARRAYS, toy.random_weights(3))]
  normal, written_normal = _run(process, W_T, clients_normal, tmp_path, 'a')
  garbled, written_garbage = _run(process, W_T, clients_garbage, tmp_path, 'b')
  toy.assert_weights_equal(
      toy.global_weights(process, normal.state),
      toy.global_weights(process, garbled.state),
  )
  assert toy.distance(written_normal[0], written_garbage[0]) > 100.0
  toy.assert_weights_equal(written_normal[1], written_garbage[1])
  # The global metrics do not depend on v_k either; the personal ones do.
  train_normal = normal.metrics['client_work']['train']
  train_garbage = garbled.metrics['client_work']['train']
  assert train_normal['global_train_loss'] == train_garbage['global_train_loss']
  assert (
      train_normal['personal_train_loss']
      != train_garbage['personal_train_loss']
  )


# ------------------------------------------------------------------ lambda


def test_large_lambda_pulls_personal_model_to_global(tmp_path):
  lr = 5e-4
  far_v = toy.random_weights(4, scale=3.0)
  start_distance = toy.distance(far_v, W_T)
  results = {}
  for lam in (1e3, 1e-2):
    process = toy.build_process(lr=lr, personal_lambda=lam, local_steps=STEPS)
    _, (written,) = _run(process, W_T, [(ARRAYS, far_v)], tmp_path, f'l{lam}')
    toy.assert_weights_close(
        written,
        toy.sgd_reference(
            far_v, toy.split_batches(ARRAYS, BATCH), lr, center=W_T, lam=lam
        ),
    )
    results[lam] = toy.distance(written, W_T)
  # lr * lam = 0.5: each step halves v - w_t (up to the tiny gradient term).
  assert results[1e3] < 0.2 * start_distance
  assert results[1e-2] > 0.95 * start_distance
  assert results[1e3] < 0.2 * results[1e-2]


def test_lambda_zero_is_local_training(tmp_path):
  process = toy.build_process(lr=LR, personal_lambda=0.0, local_steps=STEPS)
  other_w_t = toy.random_weights(9, scale=2.0)
  out_a, (written_a,) = _run(process, W_T, [(ARRAYS, V_K)], tmp_path, 'a')
  out_b, (written_b,) = _run(process, other_w_t, [(ARRAYS, V_K)], tmp_path, 'b')
  toy.assert_weights_equal(written_a, written_b)
  toy.assert_weights_close(
      written_a, toy.sgd_reference(V_K, toy.split_batches(ARRAYS, BATCH), LR)
  )
  # Sanity: the global models did differ.
  assert (
      toy.distance(
          toy.global_weights(process, out_a.state),
          toy.global_weights(process, out_b.state),
      )
      > 1.0
  )


# -------------------------------------------------- swappable global solver


def test_fedprox_shrinks_the_update(process, tmp_path):
  mu = 2.0
  fedprox = toy.build_process(
      lr=LR,
      personal_lambda=LAM,
      local_steps=STEPS,
      global_proximal_strength=mu,
  )
  far_w = toy.random_weights(11, scale=2.0)  # large gradients: clear effect
  avg, _ = _run(process, far_w, [(ARRAYS, V_K)], tmp_path, 'avg')
  prox, (written,) = _run(fedprox, far_w, [(ARRAYS, V_K)], tmp_path, 'prox')
  batches = toy.split_batches(ARRAYS, BATCH)
  w_prox = toy.global_weights(fedprox, prox.state)
  toy.assert_weights_close(
      w_prox, toy.sgd_reference(far_w, batches, LR, center=far_w, lam=mu)
  )
  step_avg = toy.distance(toy.global_weights(process, avg.state), far_w)
  step_prox = toy.distance(w_prox, far_w)
  assert 0.0 < step_prox < 0.9 * step_avg
  # The personal solver is unaffected by mu.
  toy.assert_weights_close(
      written, toy.sgd_reference(V_K, batches, LR, center=far_w, lam=LAM)
  )


def test_server_adam_differs_from_sgd(process, tmp_path):
  server_lr = 0.01
  adam = toy.build_process(
      lr=LR,
      personal_lambda=LAM,
      local_steps=STEPS,
      server_optimizer=tff.learning.optimizers.build_adam(
          learning_rate=server_lr
      ),
  )
  out_adam, _ = _run(adam, W_T, [(ARRAYS, V_K)], tmp_path, 'adam')
  out_sgd, _ = _run(process, W_T, [(ARRAYS, V_K)], tmp_path, 'sgd')
  w_adam = toy.global_weights(adam, out_adam.state)
  w_sgd = toy.global_weights(process, out_sgd.state)
  assert all(np.all(np.isfinite(w)) for w in w_adam)
  assert toy.distance(w_adam, w_sgd) > 1e-2
  # First Adam step (bias-corrected): w - lr * g / (|g| + eps), g = w_t - w_k,
  # i.e. each coordinate moves by ~lr in the direction of the client's model.
  update = [a - b for a, b in zip(W_T, w_sgd)]
  for w_new, w_old, g in zip(w_adam, W_T, update):
    big = np.abs(g) > 1e-4
    assert big.sum() > 0
    np.testing.assert_allclose(
        (w_old - w_new)[big], server_lr * np.sign(g[big]), rtol=0, atol=2e-4
    )


def test_unweighted_and_mean_aggregators_agree_under_uniform(process, tmp_path):
  unweighted = toy.build_process(
      lr=LR,
      personal_lambda=LAM,
      local_steps=STEPS,
      model_aggregator=tff.aggregators.UnweightedMeanFactory(),
  )
  clients = [(ARRAYS, V_K), (OTHER_ARRAYS, toy.random_weights(3))]
  out_mean, _ = _run(process, W_T, clients, tmp_path, 'mean')
  out_unweighted, _ = _run(unweighted, W_T, clients, tmp_path, 'unweighted')
  w_mean = toy.global_weights(process, out_mean.state)
  w_unweighted = toy.global_weights(unweighted, out_unweighted.state)
  toy.assert_weights_close(w_mean, w_unweighted, atol=1e-6)
  # UNIFORM: the plain average of the two local models although one client
  # has 12 and the other 8 examples.
  finals = [
      toy.sgd_reference(W_T, toy.split_batches(a, BATCH), LR)
      for a in (ARRAYS, OTHER_ARRAYS)
  ]
  expected = [(f0 + f1) / 2 for f0, f1 in zip(*finals)]
  toy.assert_weights_close(w_mean, expected, atol=1e-5)
  # The train metrics keep the larger of the two updates' L2 norms.
  np.testing.assert_allclose(
      out_mean.metrics['client_work']['train']['max_update_norm'],
      max(toy.distance(W_T, final) for final in finals),
      rtol=1e-4,
  )


def test_num_examples_weighting(tmp_path):
  weighted = toy.build_process(
      lr=LR,
      personal_lambda=LAM,
      local_steps=STEPS,
      client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
  )
  clients = [(ARRAYS, V_K), (OTHER_ARRAYS, toy.random_weights(3))]
  out, _ = _run(weighted, W_T, clients, tmp_path)
  finals = [
      toy.sgd_reference(W_T, toy.split_batches(a, BATCH), LR)
      for a in (ARRAYS, OTHER_ARRAYS)
  ]
  expected = [(12 * f0 + 8 * f1) / 20 for f0, f1 in zip(*finals)]
  toy.assert_weights_close(toy.global_weights(weighted, out.state), expected)


def test_non_finite_client_update_is_dropped(process, tmp_path):
  bad = collections.OrderedDict(x=ARRAYS['x'].copy(), y=ARRAYS['y'].copy())
  bad['x'][1, 2] = np.nan
  out, _ = _run(
      process,
      W_T,
      [(bad, V_K), (OTHER_ARRAYS, toy.random_weights(3))],
      tmp_path,
      'mixed',
  )
  train = out.metrics['client_work']['train']
  assert train['non_finite_updates'] == 1.0
  assert train['num_clients'] == 2.0
  new_global = toy.global_weights(process, out.state)
  assert all(np.all(np.isfinite(w)) for w in new_global)
  # Zero weight: the mean is the good client's model alone.
  good_final = toy.sgd_reference(
      W_T, toy.split_batches(OTHER_ARRAYS, BATCH), LR
  )
  toy.assert_weights_close(new_global, good_final)
  # The zeroed update's norm does not count.
  np.testing.assert_allclose(
      train['max_update_norm'], toy.distance(W_T, good_final), rtol=1e-4
  )

  # Alone, the NaN client contributes nothing: the global model stays w_t.
  alone, _ = _run(process, W_T, [(bad, V_K)], tmp_path, 'alone')
  assert alone.metrics['client_work']['train']['non_finite_updates'] == 1.0
  assert alone.metrics['client_work']['train']['max_update_norm'] == 0.0
  new_global = toy.global_weights(process, alone.state)
  assert all(np.all(np.isfinite(w)) for w in new_global)
  toy.assert_weights_equal(new_global, W_T)


# ------------------------------------------------------- personalize=False


def test_global_only_process_has_plain_batches(global_only_process):
  (client_data,) = [
      m
      for p, m in _placements(global_only_process.next.type_signature.parameter)
      if p is tff.CLIENTS
  ]
  assert client_data == tff.SequenceType(
      tff.types.tensorflow_to_type(toy.INPUT_SPEC)
  )


def test_global_trajectory_is_the_same_without_personalization(
    process, global_only_process, tmp_path
):
  rounds = [
      [
          (toy.client_arrays(20 + r, 3 * BATCH), None),
          (toy.client_arrays(30 + r, 2 * BATCH, label_shift=2), None),
      ]
      for r in range(3)
  ]
  state_p = toy.with_global_weights(process, W_T)
  state_g = toy.with_global_weights(global_only_process, W_T)
  personal = [V_K, toy.random_weights(3)]
  for r, clients in enumerate(rounds):
    out_p, personal = _run(
        process,
        None,
        [(a, v) for (a, _), v in zip(clients, personal)],
        tmp_path,
        f'p{r}',
        state=state_p,
    )
    out_g, written = _run(
        global_only_process, None, clients, tmp_path, f'g{r}', state=state_g
    )
    assert written == []
    state_p, state_g = out_p.state, out_g.state
    w_p = toy.global_weights(process, state_p)
    toy.assert_weights_equal(
        w_p, toy.global_weights(global_only_process, state_g)
    )
    assert toy.distance(w_p, W_T) > 1e-2
    train_p = out_p.metrics['client_work']['train']
    train_g = out_g.metrics['client_work']['train']
    assert train_p['global_train_loss'] == train_g['global_train_loss']
    assert train_g['personal_train_loss'] == 0.0
    assert train_p['personal_train_loss'] > 0.0


# ------------------------------------------- loss as the weight (k-loss)


def test_loss_weighting_sends_the_whole_training_set_loss_to_k_loss(tmp_path):
  """As the reference's k_loss: F_k(w_t) over all of the client's data."""

  process = toy.build_process(
      lr=LR,
      personal_lambda=LAM,
      local_steps=STEPS,
      client_weighting=ditto_client.LOSS_WEIGHTING,
      model_aggregator=aggregators.KLossFactory(num_benign=1),
  )
  # Each client has 6 batches; only the first STEPS = 3 are trained on, so
  # the loss over the round's batches and over the training set differ.
  # The second client's held-back half is hard for w_t, so it has the
  # lower loss on its trained batches but the higher one on all its data.
  first = toy.client_arrays(0, 6 * BATCH)
  easy = toy.client_arrays(5, 3 * BATCH)
  hard = toy.client_arrays(6, 3 * BATCH, label_shift=1)
  second = collections.OrderedDict(
      (key, np.concatenate([easy[key], hard[key]])) for key in easy
  )
  clients = (first, second)

  def batch_mean_loss(arrays):
    batches = toy.split_batches(arrays, BATCH)[:STEPS]
    return np.mean([toy.loss_and_grad(W_T, b)[0] for b in batches])

  whole_losses = [toy.loss_and_grad(W_T, a)[0] for a in clients]
  batch_losses = [batch_mean_loss(a) for a in clients]
  assert np.argmin(whole_losses) != np.argmin(batch_losses)

  state = toy.with_global_weights(process, W_T)
  data = []
  for k, arrays in enumerate(clients):
    read_path = os.path.join(tmp_path, f'read_{k}.state')
    toy.write_state(read_path, V_K)
    client = toy.personal_client_data(
        toy.fixed_batches(arrays, BATCH),
        read_path,
        os.path.join(tmp_path, f'write_{k}.state'),
    )
    client[client_data_schema.FULL_TRAIN_KEY] = toy.fixed_batches(arrays, 7)
    data.append(client)
  output = process.next(state, data)

  measurements = output.metrics['aggregator']
  # num_benign = 1: the update of the client with the lowest loss.
  lowest = int(np.argmin(whole_losses))
  assert int(measurements['k_loss_selected']) == lowest
  np.testing.assert_allclose(
      measurements['k_loss_selected_loss'], whole_losses[lowest], rtol=1e-5
  )
  batches = toy.split_batches(clients[lowest], BATCH)[:STEPS]
  toy.assert_weights_close(
      toy.global_weights(process, output.state),
      toy.sgd_reference(W_T, batches, LR),
  )


def test_model_types_are_built_once_per_model_fn():
  calls = []

  def counting_model_fn():
    calls.append(1)
    return toy.model_fn()

  def build():
    return ditto.build_ditto_process(
        counting_model_fn,
        client_optimizer=toy.sgd(LR),
        personal_lambda=LAM,
        local_steps=STEPS,
    )

  build()
  first_build_calls = len(calls)
  build()
  # Tracing the computations needs models; the types are not built again.
  assert len(calls) - first_build_calls < first_build_calls
  weights_type = client_data_schema.model_weights_type(counting_model_fn)
  calls.clear()
  assert (
      client_data_schema.model_weights_type(counting_model_fn) is weights_type
  )
  assert not calls
  # Another model_fn gets its own (equal) types.
  other = lambda: toy.model_fn()  # pylint: disable=unnecessary-lambda
  assert client_data_schema.model_weights_type(other) == weights_type

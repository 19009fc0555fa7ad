"""Per-FedAvg, Hessian-free variant (Fallah et al. 2020), as the Ditto reference's `meta`.

Per local iteration, with three fresh mini-batches b1, b2, b3 of the client's
stream (reference_implementations.md A.2, `trainers_MTL/meta.py`):

1. u = w_k - alpha * grad F_k(w_k; b1)            (alpha = the client lr)
2. g = grad F_k(u; b2)
3. Hg ~ (grad F_k(w_k + delta g; b3) - grad F_k(w_k - delta g; b3)) / (2 delta),
   delta = 1e-3 (central finite difference of the gradient)
4. w_k <- w_k - beta * g + alpha * beta * Hg,      beta = 0.01.

The client sends w_t - w_k; the server averages (unweighted) at learning rate
1. Personalization at evaluation is plain fine-tuning from the global model
(`finetune` without the proximal term), as the reference's final fine-tuning.

Deviations: the two gradients of the finite difference are taken in
inference mode (no dropout). The reference's FEMNIST graph drops units in
every pass, so its two gradients use independent dropout masks and their
difference over 2 delta is dominated by mask noise; with dropout active (this
project's dropout masks depend on the layer input, which differs between
w + delta g and w - delta g) Per-FedAvg diverged on FEMNIST in 3 rounds (8 of
10 client updates non-finite), measured. Steps 1 and 2 keep dropout (training
mode), as the reference. The reference fine-tunes max(finetune_iters * n_k / B,
finetune_iters) steps once after training; here `finetune_steps` steps at every
evaluation (as this project's `finetune`). delta and beta are the reference's
constants (arguments here).

Even in inference mode the difference quotient is far from H g on a ReLU /
max-pool network: on the FEMNIST CNN at its initial model, delta = 1e-3 gives
a product about 7 times the autodiff H g in norm (median relative error 7.2
over 10 writers; 2.6 at delta 1e-2, 20 at 1e-4; it does not converge as delta
shrinks), while on the smooth Synthetic model it matches to 1e-4
(`scripts/check_hessian_vector_product.py`, `results/hvp_check_femnist.csv`).
With alpha = 0.1 the alpha * beta * Hg term then outweighs beta * g and
FEMNIST training diverges; alpha is `perfedavg_alpha` (default the client
lr), chosen on validation data per dataset (docs/results.md).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import client_data_schema
from tff_ditto import optimization
from tff_ditto import process_templates
from tff_ditto.baselines import common

FINITE_DIFFERENCE_DELTA = 1e-3
META_LEARNING_RATE = 0.01
# Batches per meta-iteration: the inner step's, the meta gradient's and the
# Hessian-vector product's.
BATCHES_PER_ITERATION = 3


def finite_difference_hvp(
    model, trainable, batch, vector, delta: float, training: bool = False
):
  """Hessian-vector product of the batch loss by a central finite difference.

  (grad F(x + delta v) - grad F(x - delta v)) / (2 delta) at the current
  values x of `trainable`; the variables hold x again afterwards. Both
  gradients are taken in inference mode by default: with dropout active the
  two evaluations would drop different units and their difference divided by
  2 delta would be mask noise, not curvature.

  Args:
    model: The `VariableModel` whose variables include `trainable`.
    trainable: Flat tuple of its trainable variables.
    batch: One batch.
    vector: Flat tuple of tensors shaped like `trainable`.
    delta: Finite-difference step.
    training: Forward-pass mode of the two gradients.

  Returns:
    Flat tuple of tensors, the approximate H v.
  """
  point = [tf.identity(v) for v in trainable]
  for variable, x, v in zip(trainable, point, vector):
    variable.assign(x + delta * v)
  plus, _, _ = optimization.gradient(model, trainable, batch, training)
  for variable, x, v in zip(trainable, point, vector):
    variable.assign(x - delta * v)
  minus, _, _ = optimization.gradient(model, trainable, batch, training)
  for variable, x in zip(trainable, point):
    variable.assign(x)
  return tuple((p - m) / (2.0 * delta) for p, m in zip(plus, minus))


def build_perfedavg_process(
    model_fn: client_data_schema.ModelFn,
    *,
    learning_rate: float,
    local_steps: int,
    meta_learning_rate: float = META_LEARNING_RATE,
    delta: float = FINITE_DIFFERENCE_DELTA,
    model_aggregator=None,
    server_optimizer=None,
    simulate_attacks: bool = False,
) -> tff.learning.templates.LearningProcess:
  """Builds Per-FedAvg (HF) training as a `LearningProcess`.

  Client data: `OrderedDict(batches, [attack])`; each local iteration takes
  three batches of the stream (which must have equally sized batches, as
  the runner's endless streams have).

  Args:
    model_fn: No-arg `tff.learning.models.VariableModel` builder.
    learning_rate: alpha, the inner SGD step (the client lr).
    local_steps: Meta-iterations per client per round.
    meta_learning_rate: beta (reference 0.01).
    delta: Finite-difference step of the Hessian-vector product (1e-3).
    model_aggregator: `tff.aggregators` factory (default mean).
    server_optimizer: Default SGD at learning rate 1.
    simulate_attacks: Add the malicious-client instruction to the data.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On non-positive local_steps, rates or delta.
  """
  common.check_local_steps(local_steps)
  for name, value in (
      ('learning_rate', learning_rate),
      ('meta_learning_rate', meta_learning_rate),
      ('delta', delta),
  ):
    if value <= 0:
      raise ValueError(f'{name} must be > 0, got {value}.')
  data_type = client_data_schema.client_data_struct_type(
      model_fn, attack=simulate_attacks
  )

  def make_client_update():
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def client_update(initial_weights, client_data):
      common.assign_all(
          common.all_variables(weights), common.all_variables(initial_weights)
      )
      trainable = tuple(tf.nest.flatten(weights.trainable))

      def meta_step(loop_state, triple):
        loss_sum, num_batches, num_examples = loop_state
        batch1, batch2, batch3 = (
            tf.nest.map_structure(lambda t, i=i: t[i], triple) for i in range(3)
        )
        start = [tf.identity(v) for v in trainable]
        gradients1, loss, examples = optimization.gradient(
            model, trainable, batch1
        )
        for variable, x, g in zip(trainable, start, gradients1):
          variable.assign(x - learning_rate * g)
        meta_gradients, _, _ = optimization.gradient(model, trainable, batch2)
        for variable, x in zip(trainable, start):
          variable.assign(x)
        correction = finite_difference_hvp(
            model, trainable, batch3, meta_gradients, delta
        )
        for variable, x, g, h in zip(
            trainable, start, meta_gradients, correction
        ):
          variable.assign(
              x
              - meta_learning_rate * g
              + learning_rate * meta_learning_rate * h
          )
        return (
            loss_sum + loss,
            num_batches + 1.0,
            num_examples + tf.cast(examples, tf.float32),
        )

      zero = tf.constant(0.0)
      loss_sum, num_batches, num_examples = batch_loops.reduce_batches(
          client_data[client_data_schema.BATCHES_KEY]
          .take(BATCHES_PER_ITERATION * local_steps)
          .batch(BATCHES_PER_ITERATION, drop_remainder=True),
          (zero, zero, zero),
          meta_step,
      )
      update = process_templates.model_delta(initial_weights, weights.trainable)
      statistics = process_templates.loss_statistics(
          global_loss_sum=loss_sum,
          num_batches=num_batches,
          num_examples=num_examples,
      )
      return update, tf.constant(1.0), statistics

    return client_update

  client_work = process_templates.build_client_work(
      model_fn, data_type, make_client_update, simulate_attacks
  )
  return process_templates.compose_process(
      model_fn, client_work, model_aggregator, server_optimizer
  )

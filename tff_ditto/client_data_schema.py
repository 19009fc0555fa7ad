"""The per-client data of a round: its keys, its TFF type and the model types.

Every learning process of this project (Ditto, `tff_ditto.ditto`, and the
baselines, `tff_ditto.baselines`) takes, per client and round, either a plain
sequence of training batches or an `OrderedDict` of these fields, in this
order:

* `batches`: the client's training batches of the round;
* `personal_state`: a dataset of one `(read_path, write_path)` handle of the
  client's state file (`tff_ditto.client_states`);
* `attack`: a dataset of one malicious-client instruction `OrderedDict(code,
  scale, seed)` (`tff_ditto.attacks.UPDATE_ATTACK_CODES`);
* `validation`: the client's whole validation split, batched (Ditto's
  per-step lambda selection);
* `full_train`: the client's whole training set, batched and unshuffled
  (round-start losses, SKL's teacher);
* `num_train_examples`: a dataset of one float32, the size of the client's
  training set (the `num_train_examples` client weighting of Ditto).

The types derived from a model builder (`model_weights_type`,
`batch_element_type`) are memoized per builder: building a Keras model costs
0.2-0.5 s and a process build asks for them up to ten times.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import computation_cache

BATCHES_KEY = 'batches'
STATE_KEY = 'personal_state'
ATTACK_KEY = 'attack'
VALIDATION_KEY = 'validation'
# The client's whole training set, unshuffled (round-start losses).
FULL_TRAIN_KEY = 'full_train'
# The size of the client's training set n_k: the client sees only the round's
# batches, so it cannot count its data itself.
NUM_TRAIN_EXAMPLES_KEY = 'num_train_examples'
NUM_TRAIN_EXAMPLES_TYPE = tff.TensorType(np.float32)

ModelFn = Callable[[], tff.learning.models.VariableModel]

STATE_HANDLE_TYPE = tff.types.tensorflow_to_type(
    collections.OrderedDict(
        read_path=tf.TensorSpec([], tf.string),
        write_path=tf.TensorSpec([], tf.string),
    )
)

ATTACK_TYPE = tff.types.tensorflow_to_type(
    collections.OrderedDict(
        code=tf.TensorSpec([], tf.int32),
        scale=tf.TensorSpec([], tf.float32),
        seed=tf.TensorSpec([2], tf.int64),
    )
)


# Types derived from a model_fn, per model_fn.
_MODEL_TYPES = computation_cache.PerObjectMemo()


def _build_model_types(model_fn: ModelFn) -> tuple[tff.StructType, tff.Type]:
  """(weights type, batch element type) of `model_fn`'s model."""
  with tf.Graph().as_default():
    model = model_fn()
    return (
        tff.learning.models.weights_type_from_model(model),
        tff.types.tensorflow_to_type(model.input_spec),
    )


def _model_types(model_fn: ModelFn) -> tuple[tff.StructType, tff.Type]:
  return _MODEL_TYPES.get_or_build(
      model_fn, (), lambda: _build_model_types(model_fn)
  )


def model_weights_type(model_fn: ModelFn) -> tff.StructType:
  """The TFF type of `ModelWeights` of `model_fn`'s model (memoized).

  Args:
    model_fn: The model builder.

  Returns:
    The type of `tff.learning.models.ModelWeights.from_model(model_fn())`.
  """
  return _model_types(model_fn)[0]


def batch_element_type(model_fn: ModelFn) -> tff.Type:
  """The TFF type of one batch of `model_fn`'s input (memoized).

  Args:
    model_fn: The model builder.

  Returns:
    The type of the model's `input_spec`.
  """
  return _model_types(model_fn)[1]


def client_data_struct_type(
    model_fn: ModelFn,
    *,
    personal_state: bool = False,
    attack: bool = False,
    validation: bool = False,
    full_train: bool = False,
    num_train_examples: bool = False,
) -> tff.StructType:
  """The per-client data as a struct: `batches`, then the fields asked for.

  Args:
    model_fn: The model builder (gives the batch element type).
    personal_state: Include the personal-state handle.
    attack: Include the per-client attack instruction.
    validation: Include the client's validation batches.
    full_train: Include the client's whole training set.
    num_train_examples: Include the size of the client's training set.

  Returns:
    A `tff.StructType` with the fields in the order of the module docstring.
  """
  batches_type = tff.SequenceType(batch_element_type(model_fn))
  fields = [(BATCHES_KEY, batches_type)]
  if personal_state:
    fields.append((STATE_KEY, tff.SequenceType(STATE_HANDLE_TYPE)))
  if attack:
    fields.append((ATTACK_KEY, tff.SequenceType(ATTACK_TYPE)))
  if validation:
    fields.append((VALIDATION_KEY, batches_type))
  if full_train:
    fields.append((FULL_TRAIN_KEY, batches_type))
  if num_train_examples:
    fields.append(
        (NUM_TRAIN_EXAMPLES_KEY, tff.SequenceType(NUM_TRAIN_EXAMPLES_TYPE))
    )
  return tff.StructType(fields)


def client_data_type(
    model_fn: ModelFn,
    personalize: bool = True,
    simulate_attacks: bool = False,
    validation: bool = False,
    full_train: bool = False,
    num_train_examples: bool = False,
) -> tff.Type:
  """The per-client data type of a Ditto round (or of a plain evaluation).

  Args:
    model_fn: The model builder (gives the batch element type).
    personalize: Include the personal-state handle.
    simulate_attacks: Include the per-client attack instruction.
    validation: Include the client's validation batches (per-step lambda
      selection).
    full_train: Include the client's whole training set (round-start loss
      of `tff_ditto.ditto_client.LOSS_WEIGHTING`).
    num_train_examples: Include the size of the client's training set
      (`tff_ditto.ditto_client.NUM_TRAIN_EXAMPLES_WEIGHTING`).

  Returns:
    A sequence of batches when none is set; otherwise the struct of
    `client_data_struct_type` with the fields set.
  """
  if not (
      personalize
      or simulate_attacks
      or validation
      or full_train
      or num_train_examples
  ):
    return tff.SequenceType(batch_element_type(model_fn))
  return client_data_struct_type(
      model_fn,
      personal_state=personalize,
      attack=simulate_attacks,
      validation=validation,
      full_train=full_train,
      num_train_examples=num_train_examples,
  )


def state_handle(client_data: Mapping[str, Any]) -> collections.OrderedDict:
  """The `(read_path, write_path)` handle from a client's data."""
  return batch_loops.single_element(client_data[STATE_KEY])


def attack_instruction(
    client_data: Mapping[str, Any],
) -> collections.OrderedDict:
  """The `OrderedDict(code, scale, seed)` attack instruction of a client."""
  return batch_loops.single_element(client_data[ATTACK_KEY])


def num_train_examples(client_data: Mapping[str, Any]) -> tf.Tensor:
  """The float32 size of the client's training set from its data."""
  return batch_loops.single_element(client_data[NUM_TRAIN_EXAMPLES_KEY])

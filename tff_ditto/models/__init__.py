"""Keras models of the Ditto reference implementation, packaged for TFF.

Each dataset gets a `ModelSpec` (`get_model_spec(name, seed=...)`): a builder
for a fresh, built, uncompiled Keras model, its loss and its single metric
(`'accuracy'`), the element spec of one batch (`OrderedDict(x=..., y=...)`)
and a `tff_model_fn()` that wraps all of it with
`tff.learning.models.from_keras_model`.

Modules: `registry` (`ModelSpec`, `get_model_spec`, `model_names`, exported
here), `architectures` (the `build_*` Keras models), `layers`
(`DeterministicDropout`, `BatchStatisticsNormalization`), `losses` (the
Vehicle SVM's `SVMHingeLoss` and `SignAccuracy`) and `zero_initialization`
(models whose variables start at zeros, for client computations that assign
them before use).

The architectures follow litian96/ditto (`flearn/models/*`), see
shared/reference/reference_implementations.md, section A.7:

| spec        | model                                              | params    |
|-------------|----------------------------------------------------|-----------|
| `femnist`   | CNN 16-32 conv5x5, FC 128, 62 classes, 2 dropouts  |   222,078 |
| `fmnist`    | CNN 32-64 conv5x5, FC 1024, 10 classes             | 3,274,634 |
| `celeba`    | 4 x [conv3x3x32, BatchNorm, maxpool, ReLU], FC 2   |    31,202 |
| `vehicle`   | linear SVM 100 -> 1, hinge loss + 0.01 * ||W||^2   |       101 |
| `synthetic` | multinomial logistic regression 60 -> 10           |       610 |

(`params` counts trainable parameters; for CelebA it includes the batch
normalization's gamma/beta, its only weights.)

Deliberate deviations from the reference code:

* FEMNIST: the reference calls `tf.nn.dropout` unconditionally, so dropout is
  also active when it evaluates. Here dropout is active in training only
  (`training=True`, which is what TFF's `forward_pass` uses for training) and
  is the identity at evaluation. The dropout masks come from a stateless RNG
  seeded by the layer input (`DeterministicDropout`), so a client update gives
  bit-identical results whenever and in whichever process it is re-executed.
* CelebA: as the reference (`tf.layers.batch_normalization(...,
  training=True)`), batch normalization always uses the statistics of the
  batch it normalizes, in training and at evaluation
  (`BatchStatisticsNormalization`); the model keeps no moving statistics, so it
  has no non-trainable weights, and the global model, the personal models and
  every fine-tuning start normalize alike. Evaluation therefore depends on how
  the test data are batched: the reference normalizes each device's whole
  test set as one batch; here each batch of `eval_batch_size` (100) examples.
* Vehicle: labels are a vector `[None]` of +-1 (the reference feeds `[None,1]`);
  the loss and accuracy reshape predictions `[None,1]` accordingly. The L2 term
  is a Keras `kernel_regularizer`. TFF's `VariableModel.forward_pass` adds
  `keras_model.losses` to the batch loss (so gradients and `BatchOutput.loss`
  include `0.01 * ||W||^2`), but the `'loss'` *metric* that `from_keras_model`
  reports only calls the loss object and therefore excludes the L2 term.

Initial weights: Keras initializers are unseeded unless `get_model_spec(...,
seed=...)` is used (or `tf.keras.utils.set_random_seed` was called). With a
seed, every layer gets its own fixed initializer seed, so `keras_model_fn()`
returns identical weights in every process.
"""

from tff_ditto.models.registry import ModelSpec
from tff_ditto.models.registry import get_model_spec
from tff_ditto.models.registry import model_names

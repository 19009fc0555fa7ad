"""The Ditto paper's personalization and fairness baselines as TFF learning processes.

Modules: `term` (TERM-tilted FedAvg), `l2sgd` (mean-regularized MTL), `apfl`
(adaptive personalized FL as the reference codes it), `perfedavg` (Per-FedAvg
HF), `mapper` (model interpolation), `finetuning` (EWC, SKL, early-stopping
and interpolation fine-tuning, and the baselines' evaluations), `common`
(model variables, proximal SGD; the client work and process composition are
`tff_ditto.process_templates`), `registry` (the methods of
`tff_ditto.training.ExperimentRunner`).
"""

from tff_ditto.baselines.registry import BASELINE_METHODS
from tff_ditto.baselines.registry import STATEFUL_METHODS
from tff_ditto.baselines.registry import BaselineMethod
from tff_ditto.baselines.registry import UNREAD_CONFIG_FIELDS
from tff_ditto.baselines.registry import build_key
from tff_ditto.baselines.registry import build_method

"""The configuration of one experiment run (no TensorFlow import).

`ExperimentConfig` and the description of each field's command-line flag
(`field_help`). The rules a valid config follows: `tff_ditto.config_validation`.
Which lambdas a config trains and selects among:
`tff_ditto.lambda_policy`; the config a run actually uses and which runs give
the same results: `tff_ditto.config_equivalence`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

# The names are defined in `tff_ditto.names`; `PERSONALIZED_METHODS` stays
# importable from here.
from tff_ditto.names import AGGREGATOR_NAMES
from tff_ditto.names import ATTACK_ALIASES
from tff_ditto.names import ATTACKS
from tff_ditto.names import NO_ATTACK
from tff_ditto.names import PERSONALIZED_METHODS  # pylint: disable=unused-import

SAMPLING_MODES = ('weighted', 'uniform')
# 'auto': the paper's choice among per-candidate personal models at
# evaluation; 'per_step': the reference code's choice at every personal step.
LAMBDA_SELECTIONS = ('fixed', 'auto', 'per_step')

SERVER_OPTIMIZERS = ('sgd', 'adam')
# Kept in sync with tff_ditto.batch_streams.BATCH_STREAMS.
BATCH_STREAMS = ('reference', 'per_round_shuffle')

# How `run_experiment.py` makes a field's command-line flag, the field's
# metadata 'flag': FLAG_FROM_FIELD, a flag --<field> of the field's type
# (integer, float, bool; an enum of the metadata's 'choices' for a text) and
# default; FLAG_PRESET, the same with default None: the dataset preset's value
# (`tff_ditto.experiment_defaults`) unless given; FLAG_BY_HAND, a flag defined
# by hand there (a list, or a text it parses) with the field's help; NO_FLAG,
# not set on the command line. The metadata's 'help' is the flag's help text.
FLAG_FROM_FIELD = 'from_field'
FLAG_PRESET = 'preset'
FLAG_BY_HAND = 'by_hand'
NO_FLAG = 'none'

# The --attack choices: none, the paper's names, then the other attacks.
_ATTACK_CHOICES = (
    (NO_ATTACK,)
    + tuple(ATTACK_ALIASES)
    + tuple(name for name in ATTACKS if name != NO_ATTACK)
)


def _field(
    default,
    help_text: str,
    *,
    flag: str = FLAG_FROM_FIELD,
    choices: Optional[tuple[str, ...]] = None,
):
  """An `ExperimentConfig` field with its command-line flag's description.

  Args:
    default: The field's default.
    help_text: The flag's help text (metadata 'help').
    flag: How the flag is made: FLAG_FROM_FIELD, FLAG_PRESET, FLAG_BY_HAND or
      NO_FLAG (metadata 'flag').
    choices: The values of an enum flag (metadata 'choices'), or None.

  Returns:
    The `dataclasses.field`.
  """
  return dataclasses.field(
      default=default,
      metadata=dict(help=help_text, flag=flag, choices=choices),
  )


# The value each field had in effect before it was added to ExperimentConfig,
# where that differs from its default: a run recorded without the field ran
# with this value.
VALUES_BEFORE_FIELD_EXISTED = {'batch_stream': 'per_round_shuffle'}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Hyper-parameters of one run (the reference code's defaults where known).

  Each field's metadata holds the help text of its `run_experiment.py` flag
  and how the flag is made (`FLAG_FROM_FIELD`, ...; `field_help`).

  Attributes:
    method: One of `tff_ditto.names.METHODS`. `local` is Ditto with lambda = 0.
    rounds: Communication rounds.
    clients_per_round: Clients sampled per round (capped at the client count).
    local_steps: Mini-batch steps per client per round (reference
      `local_iters`).
    batch_size: Training batch size.
    client_lr: SGD learning rate of the local (global-model and personal)
      steps.
    personal_lr: SGD learning rate of the personal steps of `ditto` and
      `local` when it should differ from `client_lr`; None: `client_lr`
      (the reference code uses one learning rate for both).
    server_lr: Server optimizer learning rate (SGD 1.0 = reference FedAvg).
    server_optimizer: 'sgd' or 'adam'.
    lam: Ditto's lambda (ignored by `global`; 0 for `local`) when
      `lam_selection` is 'fixed'.
    lam_selection: 'fixed' (one lambda, `lam`); 'auto': every client trains
      one personal model per candidate of
      `tff_ditto.lambda_policy.lambda_candidates(strong_attack)`
      and, at evaluation, uses the one with the lowest loss on its own
      validation split (`fallback_lambda` below 4 validation examples), the
      paper's protocol; or 'per_step', the reference code's `--dynamic_lam=1`:
      every client trains one personal model and, at every personal step,
      each candidate takes a tentative step and the one with the lowest loss
      on the client's whole validation split is kept (`fallback_lambda`
      steps below 4 validation examples; the reference has only the
      not-strong candidates). Only `ditto` uses it (the other methods ignore
      it).
    strong_attack: The device-side binary decision of the paper's lambda
      selection: strong attacks choose from the smaller lambdas. Needs
      `lam_selection` 'auto' or 'per_step'.
    fedprox_mu: FedProx proximal strength of the global solver (0 = FedAvg).
    finetune_steps: Fine-tuning mini-batch steps of the `finetune` method.
    finetune_lam: Proximal strength of fine-tuning towards the global model.
    eval_every: Evaluate every this many rounds (and after the last round).
    eval_batch_size: Batch size of evaluation.
    sampling: 'weighted' (probability proportional to training examples,
      without replacement, as the reference) or 'uniform'.
    batch_stream: 'reference': one stream per client for the whole run that
      walks its data in shuffled passes of full batches, reshuffling after
      each pass, a client with n <= batch_size training on all n as one
      batch (the reference's `gen_batch`; positions are checkpointed); or
      'per_round_shuffle': a fresh shuffled, repeated stream per client and
      round (this project's earlier behaviour). See
      `tff_ditto.batch_streams`.
    weighted_aggregation: Weight each client's delta by its number of
      training examples n_k in the server aggregation, instead of the
      reference's unweighted rule: the aggregator's example-weighted form
      (`tff_ditto.aggregators.weighted`; mean: sum n_k x_k / sum n_k; the
      robust rules weight their averaging step, median and trimmed mean
      per coordinate, bucketing by bucket weight = sum of its members' n_k).
      Not for aggregator krum or k_loss (no weighted form) nor the baseline
      methods. The default weighted sampling already draws clients with
      probability ~ n_k; weighting as well favours large clients twice
      (FedAvg's weighting is `sampling='uniform'` with this flag).
    seed: Seeds the initial model, sampling, batch order and dropout.
    checkpoint_every: Save a checkpoint every this many rounds and after the
      last (0 = never); a resume redoes the rounds after the last one.
    eval_split: 'test' or 'validation' (use 'validation' to tune).
    attack: One of `tff_ditto.attacks.ATTACKS` (or a1/a2/a3).
    attack_ratio: Fraction of all clients that are malicious (fixed set).
    attack_poison_labels: Reference-compatible mode: malicious clients of
      update attacks (A2, A3, bit flip) also train on A1-poisoned labels.
    malicious_personal_training: Malicious clients of Ditto and local train
      their personal models, as the reference does; False: only their copy
      of the global model (their state files stay as they were). Every
      benign result and the global model are the same bits either way; the
      malicious devices' personal accuracies (`malicious_*` metrics) and the
      personal train loss (then over benign clients only) differ.
    aggregator: Server aggregation rule (`tff_ditto.aggregators`): mean,
      median, trimmed_mean, krum, multi_krum, rfa, cclip, norm_clip, k_norm.
      Rules needing the number of attackers use the reference's expected
      count per round E = int(clients_per_round * num_malicious / N).
    bucketing_size: Bucketing s >= 2 around the aggregator (0 = none).
    cclip_tau: Radius of centered clipping.
    term_t: TERM's tilt t: client updates weighted by exp(t * loss) (0 =
      FedAvg; the paper uses 1, 2, 5).
    apfl_alpha: APFL's mixing weight alpha in [0, 1] (1 = local training).
    perfedavg_alpha: Per-FedAvg's inner step alpha (None = client_lr, as the
      reference); the meta step beta is 0.01.
    ewc_lam: Strength of EWC's Fisher-weighted pull towards the global model
      during fine-tuning.
    skl_lam: Strength of SKL's symmetric-KL term during fine-tuning (the KL
      is summed over the client's training set, as the reference: keep it
      small; 0.1 diverged on Synthetic(1, 1)).
    finetune_patience: Steps without validation-loss improvement after which
      `finetune_es` stops fine-tuning a client.
    report_lambdas: Extra lambdas (each >= 0; method `ditto` only, not with
      lam_selection 'per_step') whose personal models train alongside the
      run's own (same batches, same w_t) and are reported on their own
      (`benign_lam_<value>_*`) but never selected or evaluated as the run's
      model; e.g. (0, 1) gives the `local` and the lambda = 1 results in the
      same run. See `tff_ditto.lambda_policy.personal_model_lambdas`.
    curve_split: None, or the split ('validation' or 'test', not
      `eval_split`) also evaluated at every evaluation round, its summary
      released in metrics.csv with the prefix '<split>_' (e.g. choose the
      number of rounds on validation curves and read the test numbers of the
      chosen round from the same run).
  """

  method: str = _field(
      'ditto',
      'Comma-separated methods to run and compare: ditto, global (FedAvg), '
      'local (Ditto with lambda=0), finetune (FedAvg then per-client '
      "fine-tuning), and the paper's baselines (tff_ditto.baselines): term "
      '(FedAvg weighted by exp(t * loss), --term_t), l2sgd (mean-regularized '
      'local models, --lam), apfl (alpha-interpolated local/global, '
      '--apfl_alpha), ewc (FedAvg then Fisher-weighted fine-tuning, '
      '--ewc_lam), skl (FedAvg then symmetric-KL fine-tuning, --skl_lam), '
      'perfedavg (Per-FedAvg HF then fine-tuning), mapper (per-client mixture '
      'lambda in {0.25, 0.5, 0.75} then fine-tuning), finetune_es (finetune '
      'with early stopping on validation loss, --finetune_patience, '
      '--finetune_lam).',
      flag=FLAG_BY_HAND,
  )
  rounds: int = _field(
      100,
      'Communication rounds (default: per-dataset preset).',
      flag=FLAG_PRESET,
  )
  clients_per_round: int = _field(
      10,
      'Clients sampled per round (default: 10).',
      flag=FLAG_PRESET,
  )
  local_steps: int = _field(
      10,
      'Mini-batch steps per client per round, for both the personal and the '
      'global model (default: per-dataset preset).',
      flag=FLAG_PRESET,
  )
  batch_size: int = _field(
      10,
      'Training batch size (default: per-dataset preset).',
      flag=FLAG_PRESET,
  )
  client_lr: float = _field(
      0.05,
      'Client SGD learning rate of personal and global local steps '
      '(default: per-dataset preset, chosen on validation data).',
      flag=FLAG_PRESET,
  )
  personal_lr: Optional[float] = _field(
      None,
      'SGD learning rate of the personal steps of ditto and local, if it '
      'should differ from --client_lr (default: --client_lr, as in the '
      'reference code).',
  )
  server_lr: float = _field(
      1.0, 'Server learning rate (SGD 1.0 = reference FedAvg).'
  )
  server_optimizer: str = _field(
      'sgd', 'Server optimizer.', choices=SERVER_OPTIMIZERS
  )
  lam: float = _field(
      1.0,
      "Ditto's lambda: a number >= 0 (default: per-dataset preset, 1.0 "
      "mostly), or 'auto' for the paper's per-device selection: every client "
      'trains one personal model per candidate {0.1, 1, 2} ({0.05, 0.1, 0.2} '
      'with --strong_attack) and uses the one with the lowest loss on its own '
      'validation split (fixed 1, or 0.1, with fewer than 4 validation '
      "examples); or 'per_step' for the reference code's --dynamic_lam=1: one "
      'personal model per client, and at every personal step each candidate '
      'takes a tentative step and the one with the lowest loss on the '
      "client's whole validation split is kept (same candidates and fallback; "
      'costs 3 tentative steps and 3 validation passes per personal step).',
      flag=FLAG_BY_HAND,
  )
  lam_selection: str = _field(
      'fixed',
      "How lambda is chosen: 'fixed', 'auto' or 'per_step' (set with --lam: "
      "a number is 'fixed').",
      flag=NO_FLAG,
  )
  strong_attack: bool = _field(
      False,
      "With --lam=auto or --lam=per_step: the devices' binary decision that "
      'the attack is strong (choose among the smaller lambdas).',
  )
  fedprox_mu: float = _field(
      0.0, 'FedProx proximal strength of the global solver (0 = FedAvg).'
  )
  finetune_steps: int = _field(
      50,
      'Fine-tuning steps of the finetune method.',
      flag=FLAG_PRESET,
  )
  finetune_lam: float = _field(
      0.0, 'Proximal strength towards the global model during fine-tuning.'
  )
  eval_every: int = _field(
      10,
      'Evaluate every this many rounds (and at the end).',
      flag=FLAG_PRESET,
  )
  eval_batch_size: int = _field(100, 'Batch size of evaluation.', flag=NO_FLAG)
  sampling: str = _field(
      'weighted',
      'Client sampling: weighted (proportional to training examples, without '
      'replacement, as the reference) or uniform.',
      choices=SAMPLING_MODES,
  )
  batch_stream: str = _field(
      'reference',
      "Clients' training batches: reference (as the reference code's "
      'gen_batch: one stream per client for the whole run, full batches in '
      'shuffled passes, reshuffled after each pass; a client with n <= '
      'batch_size trains on all n as one batch; positions are checkpointed) '
      'or per_round_shuffle (a fresh shuffled, repeated stream per client and '
      'round: the earlier behaviour of this project).',
      choices=BATCH_STREAMS,
  )
  weighted_aggregation: bool = _field(
      False,
      "Weight each client's delta by its number of training examples in the "
      "server aggregation (the aggregator's example-weighted form; mean: "
      'sum n_k x_k / sum n_k) instead of the reference unweighted rule. Not '
      'with --aggregator=krum or k_loss (no weighted form) nor the baseline '
      'methods. --sampling=weighted (default) already draws clients in '
      'proportion to their examples, so large clients then count twice; use '
      '--sampling=uniform for FedAvg weighting.',
  )
  seed: int = _field(
      0, 'Seed of data splits, initial model, sampling and batches.'
  )
  checkpoint_every: int = _field(
      10,
      'Checkpoint every N rounds, and after the last (0 = never). A resumed '
      'run redoes the rounds after its last checkpoint, with the same '
      'results. A checkpoint costs about 0.1 s (docs/performance.md).',
  )
  eval_split: str = _field(
      'test',
      'Split evaluated: tune hyper-parameters on validation, report on test.',
      choices=('test', 'validation'),
  )
  attack: str = _field(
      NO_ATTACK,
      'Attack of the malicious clients: a1/label_poison (random labels; 1-y '
      'binary; -y Vehicle), a2/random_update (Gaussian update, sigma = std of '
      'its own update), a3/model_replacement (update x clients_per_round), '
      'label_flip (C-1-y), bit_flip (negated update), and the omniscient '
      'server-side simulations alie, ipm, mimic.',
      choices=_ATTACK_CHOICES,
  )
  attack_ratio: float = _field(
      0.0,
      'Fraction of ALL clients that are malicious (a fixed set, seeded).',
  )
  attack_poison_labels: bool = _field(
      True,
      'Reference-compatible mode: malicious clients of a2/a3/bit_flip also '
      'train on a1-poisoned labels, as the Ditto code does.',
  )
  malicious_personal_training: bool = _field(
      True,
      'Malicious clients train personal models too, as the Ditto code does. '
      'False (Ditto, local): they train only their copy of the global model '
      'and keep their state files; their updates, the global model and '
      'every benign number are the same bits, while attacked rounds save '
      'the malicious share of the personal steps and state-file I/O (only '
      'malicious_* metrics and personal_train_loss, then over benign '
      'clients, differ).',
  )
  aggregator: str = _field(
      'mean',
      'Server aggregation of model deltas (tff_ditto.aggregators): mean, '
      'coordinate-wise median, trimmed_mean (b = E), krum / multi_krum '
      '(f = E), rfa (geometric median, smoothed Weiszfeld), cclip (centered '
      "clipping, --cclip_tau), norm_clip (clip to the round's median norm, "
      'then mean; Ditto\'s "gradient clipping"), k_norm (drop the E largest '
      'norms), k_loss (the update of the client ranked clients_per_round - E '
      'by round-start training loss; Ditto reference k_loss). '
      'E = int(clients_per_round * num_malicious / num_clients).',
      choices=AGGREGATOR_NAMES,
  )
  bucketing_size: int = _field(
      0,
      'Bucketing s (Karimireddy et al. 2022): average random buckets of s '
      'updates before the aggregator; 0 = off.',
  )
  cclip_tau: float = _field(10.0, 'Clipping radius of --aggregator=cclip.')
  term_t: float = _field(
      1.0,
      'TERM tilt t (--method=term): client updates weighted by '
      'exp(t * round-start training loss); 0 = FedAvg; paper: 1, 2, 5.',
  )
  apfl_alpha: float = _field(
      0.5,
      'APFL mixing weight alpha in [0, 1] (--method=apfl): clients are '
      'evaluated on alpha * v_k + (1 - alpha) * w; 1 = local training.',
  )
  perfedavg_alpha: Optional[float] = _field(
      None,
      'Per-FedAvg inner step alpha (--method=perfedavg; default: the '
      'per-dataset preset, chosen on validation data (FEMNIST 0.01), else '
      '--client_lr as the reference). The meta step is beta = 0.01, and the '
      'update is w - beta * g + alpha * beta * Hg.',
  )
  ewc_lam: float = _field(
      1.0,
      'EWC strength (--method=ewc): fine-tuning gradient grad F + ewc_lam * '
      'Fisher * (v - w).',
  )
  skl_lam: float = _field(
      0.01,
      'SKL strength (--method=skl): fine-tuning gradient grad F + skl_lam * '
      'grad of the symmetric KL to the global model summed over the '
      'training set (default: the per-dataset preset, chosen on validation '
      'data (FEMNIST 0.001), else 0.01).',
      flag=FLAG_PRESET,
  )
  finetune_patience: int = _field(
      1,
      'finetune_es: stop fine-tuning a client after this many steps without '
      'a lower validation loss (the best-validation weights are evaluated).',
  )
  report_lambdas: tuple[float, ...] = _field(
      (),
      'Ditto only: extra lambdas (comma-separated, each >= 0, e.g. 0,1) whose '
      "personal models train alongside the run's own (--lam, or the "
      '--lam=auto candidates) on the same batches and are reported on their '
      'own (benign_lam_<value>_* in metrics.csv, lam_<value>_accuracy in '
      'client_metrics.csv) but never selected: one run then also gives the '
      'local (0) and fixed-lambda results. Each costs one personal step per '
      'step. Not with --lam=per_step.',
      flag=FLAG_BY_HAND,
  )
  curve_split: Optional[str] = _field(
      None,
      'Also evaluate this split (not --eval_split) at every evaluation round '
      'and write its summary to metrics.csv with the prefix "<split>_", e.g. '
      '--curve_split=validation to choose the number of rounds on validation '
      'curves and read the test numbers of that round from the same run.',
      choices=('validation', 'test'),
  )

  def __post_init__(self):
    # A list (from JSON records or flags) becomes a hashable tuple of floats.
    object.__setattr__(
        self,
        'report_lambdas',
        tuple(float(value) for value in self.report_lambdas),
    )

  def validate(self) -> None:
    """Raises ValueError with a one-line message on an invalid setting.

    The rules: `tff_ditto.config_validation.validate_config`.
    """
    # Imported here, not at the top: config_validation reads this module.
    # pylint: disable-next=g-import-not-at-top
    from tff_ditto import config_validation

    config_validation.validate_config(self)


def field_help(name: str) -> str:
  """The help text of the command-line flag of `ExperimentConfig` field `name`.

  Args:
    name: The field.

  Returns:
    Its metadata 'help'.

  Raises:
    KeyError: If `ExperimentConfig` has no field `name`.
  """
  fields = {field.name: field for field in dataclasses.fields(ExperimentConfig)}
  return fields[name].metadata['help']

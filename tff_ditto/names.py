"""The names of the methods, server aggregators and attacks (no TF import).

Defined once, here: `config_validation` validates settings with them without
importing TensorFlow, and the registries that build them
(`tff_ditto.baselines`, `tff_ditto.aggregators`, `tff_ditto.attacks`)
implement exactly these (tests/test_names.py checks).
"""

# ------------------------------------------------------------------ methods

# The Ditto paper's baselines (`tff_ditto.baselines`).
BASELINE_METHODS = (
    'term',
    'l2sgd',
    'apfl',
    'ewc',
    'skl',
    'perfedavg',
    'mapper',
    'finetune_es',
)
# `local` is Ditto with lambda = 0.
METHODS = ('ditto', 'local', 'global', 'finetune') + BASELINE_METHODS
# Methods whose clients keep state files (personalized / local models).
PERSONALIZED_METHODS = ('ditto', 'local', 'l2sgd', 'apfl', 'mapper')

# -------------------------------------------------------------- aggregators

# Server aggregation rules (`tff_ditto.aggregators.build_aggregator`; for
# k_loss the clients send their round-start training loss as the update's
# weight).
AGGREGATOR_NAMES = (
    'mean',
    'median',
    'trimmed_mean',
    'krum',
    'multi_krum',
    'rfa',
    'cclip',
    'norm_clip',
    'k_norm',
    'k_loss',
)
# The names whose rule has no example-weighted form (`build_aggregator(...,
# weighted=True)` raises), with the reason.
NO_WEIGHTED_FORM = {
    'krum': 'it returns a single selected update, which weights cannot change',
    'k_loss': "its weight input is the client's loss",
}
# The aggregators that `weighted_aggregation` can weight.
WEIGHTED_AGGREGATOR_NAMES = tuple(
    name for name in AGGREGATOR_NAMES if name not in NO_WEIGHTED_FORM
)

# ------------------------------------------------------------------ attacks

NO_ATTACK = 'none'
DATA_ATTACKS = ('label_poison', 'label_flip')
UPDATE_ATTACKS = ('random_update', 'model_replacement', 'bit_flip')
# Simulated on the server (`tff_ditto.aggregators.omniscient`).
OMNISCIENT_ATTACKS = ('alie', 'ipm', 'mimic')
ATTACKS = (NO_ATTACK,) + DATA_ATTACKS + UPDATE_ATTACKS + OMNISCIENT_ATTACKS
# Paper names.
ATTACK_ALIASES = {
    'a1': 'label_poison',
    'a2': 'random_update',
    'a3': 'model_replacement',
}
# Every name an attack setting accepts: the attacks, then the paper names.
ATTACK_NAMES = ATTACKS + tuple(ATTACK_ALIASES)

"""Byzantine-robust aggregation for TFF 0.87 (`tff.aggregators` factories).

Rules (each a factory; `build_aggregator(name, **kwargs)` builds them by name,
`AGGREGATOR_NAMES` lists the names):

| name         | factory                                  | module            |
|--------------|------------------------------------------|-------------------|
| mean         | `MeanFactory()`                          | mean              |
| median       | `MedianFactory()` (exact, even n too)    | median            |
| trimmed_mean | `TrimmedMeanFactory(b)`                  | trimmed_mean      |
| krum         | `KrumFactory(f, m=1)`                    | krum              |
| multi_krum   | `KrumFactory(f, m)` (m=None: n - f)      | krum              |
| rfa          | `GeometricMedianFactory(8, 0.1, 'zero')` | rfa               |
| cclip        | `CenteredClippingFactory(tau, 3)`        | centered_clipping |
| norm_clip    | `MedianNormClippingFactory(inner=None)`  | norm_clipping     |
| k_norm       | `KNormFactory(num_excluded)`             | k_norm            |
| k_loss       | `KLossFactory(num_benign)` (weighted)    | k_loss            |
| (wrapper)    | `BucketingFactory(inner, s, seed=0)`     | bucketing         |
| (wrapper)    | `ExampleWeightedFactory(inner)`          | weighted          |

All are `tff.aggregators.UnweightedAggregationFactory`s except `KLossFactory`, a
`WeightedAggregationFactory` whose weight input is the client's loss, and
`ExampleWeightedFactory` (`build_aggregator(name, weighted=True)`), the
`WeightedAggregationFactory` running a rule's example-weighted form (every
rule but krum and k_loss has one, bucketed or not; see `weighted`). Use them
as `model_aggregator=` of `tff_ditto.ditto.build_ditto_process` (which wraps
unweighted factories itself) or, through
`tff.aggregators.as_weighted_aggregator`, of TFF's weighted algorithms such as
`tff.learning.algorithms.build_weighted_fed_avg`. TFF's `clipping_factory` /
`zeroing_factory` compose in front of any of them.

Design (`base`): a rule is a pure TF function on the stacked, flattened
updates, `aggregate(updates [n, d], state, weights) -> (result [d],
new_state, measurements)`; `build_robust_process` turns it into an
`AggregationProcess`: gather the clients' updates (`gather`), flatten them to
one float32 `[n, d]` matrix (`flatten`), drop clients with NaN/Inf entries,
run the rule, unflatten. State (CClip's centre, bucketing's round counter)
lives in the process state. Measurements: `num_clients`,
`non_finite_clients`, `non_finite_result`, plus each rule's own. Rules
compose: bucketing and median-norm clipping wrap any (unweighted) rule.

Gathering in O(n d). TFF 0.87 has no `federated_collect`. Options measured
(FEMNIST CNN update, d = 222,078 float32; `process.next` called from Python
with the updates as numpy arrays; 2-core machine shared with other jobs, load
average 6-10, so single timings vary by +-30%):

| n = 100 clients                      | s / round | peak memory |
|--------------------------------------|-----------|-------------|
| TFF `UnweightedMeanFactory` (floor)  | 1.5-1.9   | 1.6-1.8 GB  |
| (c) file gather + mean  [chosen]     | 1.9-2.0   | 1.8 GB      |
| (a) concat accumulator + mean        | 2.7-3.2   | 6.2-6.4 GB  |
| (b) `UnweightedReservoirSamplingFactory(n)` | 2.7-4.4 | (concatenates too) |
| median: file / concat                | 2.9 / 4.0 | 2.0 / 6.4 GB |
| krum: file / concat                  | 2.1 / 4.4 | 2.0 / 6.5 GB |

At n = 10 all are within noise (0.2-0.3 s). At n = 1000 the file gather's
mean takes 28 s against 20 s for TFF's own mean (Python-fed; 7 s against
5 s with the updates produced inside the worker, as in a real round), while
the concat accumulator would copy ~440 GB and was not run.
`scripts/bench_aggregators.py` and `results/bench_aggregators.csv` have the
full table.

* (a) `'concat'`: the accumulator is the `[k, d]` matrix so far; client i
  copies i rows (O(n^2 d)) and the accumulator is serialized once more
  between executors. Kept as the fallback (`gather='concat'`): it is the one
  that works under every TFF context, including the multi-worker mergeable
  context.
* (b) Reservoir sampling with `sample_size >= n` returns all values, but its
  accumulator concatenates as well (plus random keys), so no better.
* (c) `'file'` (default): each client's flattened update is written to a
  file by `federated_aggregate`'s `accumulate` and only the file name is
  accumulated; the server reads and stacks the n files once, then truncates
  them. Files go to `/dev/shm` (tmpfs, RAM) under a fresh UUID folder per
  `create()`, with slot names reused every round, so storage is bounded by
  one round. Correct because TFF's C++ federating executor folds
  `accumulate` sequentially in client order and never merges (see `gather`
  for the conditions; `merge` asserts distinct names).
  Writing in a client-side `federated_map` with random names instead, the
  probe's other variant, timed the same at n = 100 (within noise) but cannot
  reuse names.
* Rejected: TF's in-process `ram://` file system (TF 2.14's `write_file`
  appends to an existing file instead of replacing it: writing 'd' over
  'abc' reads back 'abcd', so reused slots corrupt the next round and nothing
  can be freed), and TF resources shared by name (a `MutableHashTable` with a
  shared name written in one TFF computation is empty in the next: each
  computation runs in its own session).

Also measured: the robust math itself. The coordinate-wise median and the
trimmed mean use `NthElement` (selection) instead of sorting (0.8 s against
3.7-5.0 s for sort/top_k on a [222k, 300] matrix). With the updates produced
in the worker, one round at n = 1000 costs 7 s (mean), 12 s (trimmed mean),
15 s (median), 17 s (CClip), 18-20 s (Krum, RFA), 11-12 s with bucketing
s = 2 (half as many inputs to the rule), against 5 s for TFF's plain mean.
"""

from tff_ditto.aggregators.base import (
    NON_FINITE_CLIENTS,
    NON_FINITE_RESULT,
    NUM_CLIENTS,
    ZERO_WEIGHT_CLIENTS,
    RobustAggregatorFactory,
    RobustRule,
    RuleOutput,
    WeightedRobustAggregatorFactory,
    apply_rule,
    build_robust_process,
    weighted_mean,
)
from tff_ditto.aggregators.bucketing import BucketingFactory, BucketingRule, bucketing_permutation
from tff_ditto.aggregators.centered_clipping import CenteredClippingFactory, CenteredClippingRule
from tff_ditto.aggregators.flatten import FlatLayout
from tff_ditto.aggregators.gather import DEFAULT_GATHER, GATHER_METHODS
from tff_ditto.aggregators.k_loss import KLossFactory, KLossRule
from tff_ditto.aggregators.k_norm import KNormFactory, KNormRule
from tff_ditto.aggregators.krum import KrumFactory, KrumRule
from tff_ditto.aggregators.mean import MeanFactory, MeanRule
from tff_ditto.aggregators.median import MedianFactory, MedianRule
from tff_ditto.aggregators.norm_clipping import MedianNormClippingFactory, MedianNormClippingRule
from tff_ditto.aggregators.registry import AGGREGATOR_NAMES, NO_WEIGHTED_FORM, build_aggregator, expected_byzantine_per_round
from tff_ditto.aggregators.rfa import GeometricMedianFactory, GeometricMedianRule, RFAFactory
from tff_ditto.aggregators.trimmed_mean import TrimmedMeanFactory, TrimmedMeanRule
from tff_ditto.aggregators.weighted import ExampleWeightedFactory, ExampleWeightedRule

"""Ditto vs global (FedAvg) under the Ditto paper's attacks (Table 1 / 3 shape).

Runs `run_experiment.py` once per cell (attack x ratio x aggregator; each cell
runs the listed methods on the same data, sampling and malicious set), skips
cells that already finished (resumable: re-run the same command), and writes

  <output_dir>/robustness.csv   one row per (cell, method)
  <output_dir>/robustness.md    benign mean (std) accuracy per cell and method

Examples:
  .venv/bin/python scripts/sweep_robustness.py --data_dir=../shared/data \
      --output_dir=results/robustness_femnist --rounds=300
  # quick smoke test on the embedded synthetic data:
  .venv/bin/python scripts/sweep_robustness.py --dataset=synthetic \
      --rounds=20 --output_dir=/tmp/robust_quick
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

# The paper's attack ratios (Table 1): A1/A2 20/50/80 %, A3 10/15/20 %.
PAPER_GRID = (
    ('none', 0.0),
    ('a1', 0.2), ('a1', 0.5), ('a1', 0.8),
    ('a2', 0.2), ('a2', 0.5), ('a2', 0.8),
    ('a3', 0.1), ('a3', 0.15), ('a3', 0.2),
)

_DATASET = flags.DEFINE_string('dataset', 'femnist', 'Dataset name.')
_DATA_DIR = flags.DEFINE_string('data_dir', '../shared/data', 'Data root.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'results/robustness',
                                  'Where cells and tables go.')
_ROUNDS = flags.DEFINE_integer('rounds', None, 'Rounds per cell.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', None, 'Evaluation period.')
_METHODS = flags.DEFINE_string('method', 'ditto,global',
                               'Methods compared in every cell.')
_CELLS = flags.DEFINE_list(
    'cells', [f'{a}:{r}' for a, r in PAPER_GRID],
    'attack:ratio cells to run (default: the paper grid).')
_AGGREGATORS = flags.DEFINE_list(
    'aggregators', ['mean'],
    'Server aggregators to cross with the cells (e.g. mean,norm_clip for '
    "Table 3's Ditto + clipping).")
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of every cell.')
_EXTRA = flags.DEFINE_list('extra_flags', [],
                           'More run_experiment.py flags, e.g. --client_lr=0.1')


def _cell_name(attack, ratio, aggregator):
  return f'{attack}_{int(round(100 * ratio)):02d}_{aggregator}'


def _run_cell(attack, ratio, aggregator, cell_dir):
  command = [
      sys.executable, os.path.join(REPO_ROOT, 'run_experiment.py'),
      f'--dataset={_DATASET.value}', f'--data_dir={_DATA_DIR.value}',
      f'--method={_METHODS.value}', f'--attack={attack}',
      f'--attack_ratio={ratio}', f'--aggregator={aggregator}',
      f'--seed={_SEED.value}', f'--output_dir={cell_dir}',
  ] + list(_EXTRA.value)
  if _ROUNDS.value:
    command.append(f'--rounds={_ROUNDS.value}')
  if _EVAL_EVERY.value:
    command.append(f'--eval_every={_EVAL_EVERY.value}')
  if os.path.exists(os.path.join(cell_dir, 'flags.json')):
    command.append('--resume')  # same flags: continue the half-done cell
  print(' '.join(command), flush=True)
  with open(os.path.join(os.path.dirname(cell_dir),
                         os.path.basename(cell_dir) + '.log'), 'a') as log:
    return subprocess.run(command, cwd=REPO_ROOT, stdout=log,
                          stderr=subprocess.STDOUT).returncode


def main(argv):
  del argv
  import pandas as pd  # pylint: disable=g-import-not-at-top

  from tff_ditto import experiment  # pylint: disable=g-import-not-at-top

  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  methods = _METHODS.value.split(',')
  rows = []
  for aggregator in _AGGREGATORS.value:
    for cell in _CELLS.value:
      attack, ratio = cell.split(':')
      ratio = float(ratio)
      cell_dir = os.path.join(_OUTPUT_DIR.value,
                              _cell_name(attack, ratio, aggregator))
      done = all(os.path.exists(os.path.join(cell_dir, m, 'summary.json'))
                 for m in methods)
      if not done and _run_cell(attack, ratio, aggregator, cell_dir) != 0:
        print(f'cell {cell_dir} failed; see its .log', flush=True)
        continue
      for method in methods:
        with open(os.path.join(cell_dir, method, 'summary.json')) as f:
          final = json.load(f)['final']
        rows.append(dict(
            attack=attack, attack_ratio=ratio, aggregator=aggregator,
            method=method,
            benign_mean_accuracy=final['benign_mean_accuracy'],
            benign_std_accuracy=final['benign_std_accuracy'],
            benign_pooled_accuracy=final['benign_pooled_accuracy'],
            benign_worst10_accuracy=final['benign_worst10_accuracy']))
      frame = pd.DataFrame(rows)
      frame.to_csv(os.path.join(_OUTPUT_DIR.value, 'robustness.csv'),
                   index=False)
  if not rows:
    return
  frame = pd.DataFrame(rows)
  frame['cell'] = (frame['attack'] + ' ' +
                   (100 * frame['attack_ratio']).round().astype(int).astype(str)
                   + '% ' + frame['aggregator'])
  frame['mean (std)'] = frame.apply(
      lambda r: f"{r['benign_mean_accuracy']:.3f} ({r['benign_std_accuracy']:.3f})",
      axis=1)
  table = frame.pivot(index='cell', columns='method',
                      values='mean (std)').reset_index()
  order = {name: i for i, name in enumerate(frame['cell'].drop_duplicates())}
  table = table.sort_values('cell', key=lambda c: c.map(order))
  with open(os.path.join(_OUTPUT_DIR.value, 'robustness.md'), 'w') as f:
    f.write('Benign per-client test accuracy, mean (std), '
            f'{_DATASET.value}\n\n')
    f.write(experiment.markdown_table(table) + '\n')
  print(experiment.markdown_table(table))


if __name__ == '__main__':
  app.run(main)

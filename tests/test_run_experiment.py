"""End-to-end tests of the run_experiment.py command line (real subprocesses)."""

import csv
import dataclasses
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import typing

import pytest

from tff_ditto import experiment_defaults
from tff_ditto import names
from tff_ditto import training_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = 'run_experiment.py'
TINY = [
    '--rounds=2',
    '--eval_every=1',
    '--max_clients=6',
    '--clients_per_round=3',
]
RUN_TIMEOUT_S = 400


def _env():
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  return env


def _run(*args, timeout=60):
  return subprocess.run(
      [sys.executable, SCRIPT, *args],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def _lines(text):
  return [line for line in text.splitlines() if line.strip()]


# ------------------------------------------------ processes and their workers


def _stat(pid):
  """(ppid, state, start time) of a process, or None if it is gone."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])
  except (FileNotFoundError, ProcessLookupError, IndexError):
    return None


def _is_worker(pid):
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return b'worker_binary' in f.read()
  except (FileNotFoundError, ProcessLookupError):
    return False


def _workers_with_parent(parent_pid):
  """{(pid, start time)} of the worker_binary children of a process."""
  found = set()
  for name in os.listdir('/proc'):
    if name.isdigit():
      stat = _stat(int(name))
      if stat and stat[0] == parent_pid and _is_worker(int(name)):
        found.add((int(name), stat[2]))
  return found


def _alive_worker(worker):
  """Whether that very process (pid and start time) still runs."""
  pid, start_time = worker
  stat = _stat(pid)
  return (
      stat is not None
      and stat[1] != 'Z'
      and stat[2] == start_time
      and _is_worker(pid)
  )


class TrackedRun:
  """A run_experiment.py subprocess whose worker_binary children are recorded."""

  def __init__(self, *args, timeout=RUN_TIMEOUT_S):
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile(
        'w+'
    ) as err:
      process = subprocess.Popen(
          [sys.executable, SCRIPT, *args],
          cwd=REPO,
          env=_env(),
          stdout=out,
          stderr=err,
          text=True,
      )
      self.pid = process.pid
      self.workers = set()
      deadline = time.monotonic() + timeout
      while process.poll() is None:
        self.workers |= _workers_with_parent(process.pid)
        if time.monotonic() > deadline:
          process.kill()
          process.wait()
          pytest.fail(f'run_experiment.py {args} ran past {timeout} s')
        time.sleep(0.1)
      self.returncode = process.returncode
      out.seek(0)
      err.seek(0)
      self.stdout, self.stderr = out.read(), err.read()

  def describe(self):
    return (
        f'rc={self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}'
    )


def _assert_workers_stopped(run):
  # The parent stops its worker before it exits; allow a moment for the
  # kernel to reap it.
  deadline = time.monotonic() + 5.0
  while time.monotonic() < deadline and any(
      _alive_worker(p) for p in run.workers
  ):
    time.sleep(0.1)
  assert not [w for w in run.workers if _alive_worker(w)], run.describe()
  assert not _workers_with_parent(run.pid)


# ------------------------------------------------------------------ --help


def test_help_lists_the_flags():
  result = _run('--help')
  text = result.stdout
  for flag in (
      'dataset',
      'method',
      'lam',
      'attack_ratio',
      'rounds',
      'output_dir',
      'resume',
      'overwrite',
  ):
    assert re.search(rf'--(\[no\])?{flag}:', text), flag
  assert 'Traceback' not in result.stderr


def test_help_exits_zero():
  assert _run('--help').returncode == 0


_FLAG_DUMP = textwrap.dedent("""
    import json, runpy, sys
    sys.argv = ['run_experiment']
    runpy.run_path({script!r}, run_name='run_experiment')
    from absl import flags
    print(json.dumps({{
        flag.name: dict(help=flag.help, default=flag.default,
                        type=flag.flag_type(),
                        choices=getattr(flag.parser, 'enum_values', None))
        for flag in flags.FLAGS.get_key_flags_for_module('run_experiment')
    }}))
""")

# Value types of the config fields and the flag types made from them.
_FLAG_TYPES = {int: 'int', float: 'float', bool: 'bool'}


def _run_experiment_flags():
  """{name: help, default, type, choices} of run_experiment.py's flags."""
  result = subprocess.run(
      [sys.executable, '-c', _FLAG_DUMP.format(script=SCRIPT)],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout)


def test_every_config_field_has_a_flag_with_its_help_text():
  fields = dataclasses.fields(training_config.ExperimentConfig)
  types = typing.get_type_hints(training_config.ExperimentConfig)
  defined = _run_experiment_flags()
  for field in fields:
    help_text = field.metadata.get('help')
    assert isinstance(help_text, str) and help_text.strip(), field.name
    assert training_config.field_help(field.name) == help_text
  # lam_selection is set through --lam; eval_batch_size never was a flag. A
  # new field gets a flag.
  no_flag = {
      f.name for f in fields if f.metadata['flag'] == training_config.NO_FLAG
  }
  assert no_flag == {'lam_selection', 'eval_batch_size'}
  for field in fields:
    if field.name in no_flag:
      assert field.name not in defined, field.name
      continue
    assert field.name in defined, f'ExperimentConfig.{field.name} has no flag'
    flag = defined[field.name]
    choices = field.metadata['choices']
    # absl starts an enum flag's help with its choices.
    prefix = f'<{"|".join(choices)}>: ' if choices is not None else ''
    assert flag['help'] == prefix + field.metadata['help'], field.name
    how = field.metadata['flag']
    if how == training_config.FLAG_BY_HAND:
      continue
    assert how in (training_config.FLAG_FROM_FIELD, training_config.FLAG_PRESET)
    if how == training_config.FLAG_PRESET:
      assert flag['default'] is None, field.name
      for dataset, preset in experiment_defaults.DATASET_PRESETS.items():
        assert field.name in preset, (field.name, dataset)
    else:
      assert flag['default'] == field.default, field.name
    if choices is not None:
      assert flag['type'] == 'string enum', field.name
      assert flag['choices'] == list(choices), field.name
    else:
      value_type = typing.get_args(types[field.name]) or (types[field.name],)
      assert flag['type'] == _FLAG_TYPES[value_type[0]], field.name
  # The enum choices are exactly the values the config accepts.
  attack = [f for f in fields if f.name == 'attack'][0]
  assert sorted(attack.metadata['choices']) == sorted(names.ATTACK_NAMES)
  aggregator = [f for f in fields if f.name == 'aggregator'][0]
  assert aggregator.metadata['choices'] == names.AGGREGATOR_NAMES


# --------------------------------------------------------------- bad flags

BAD_FLAGS = [
    (['--method=nope'], 'unknown --method'),
    (['--method=ditto,ditto'], 'twice'),
    (['--rounds=0'], 'rounds must be >= 1'),
    (['--clients_per_round=0'], 'clients_per_round must be >= 1'),
    (['--lam=-1'], 'lam must be >= 0'),
    (['--lam=sometimes'], "--lam must be a number >= 0, 'auto' or 'per_step'"),
    (
        ['--lam=per_step', '--validation_fraction=0'],
        '--lam=per_step chooses lambda by validation loss',
    ),
    (['--strong_attack', '--lam=1'], 'no effect with lam_selection fixed'),
    (['--attack_ratio=1.5'], 'attack_ratio'),
    (
        ['--method=ditto', '--report_lambdas=0,-1'],
        'report_lambdas must all be >= 0',
    ),
    (
        ['--method=ditto', '--report_lambdas=0,x'],
        '--report_lambdas must be numbers',
    ),
    (['--method=global', '--report_lambdas=0'], 'method ditto only'),
    (
        ['--method=ditto', '--lam=per_step', '--report_lambdas=0'],
        'not with lam_selection per_step',
    ),
    (['--curve_split=test'], 'curve_split must be'),
    (
        ['--weighted_aggregation', '--aggregator=krum'],
        'aggregator krum has no example-weighted form',
    ),
    (['--resume'], '--resume needs the --output_dir'),
    (['--resume', '--overwrite', '--output_dir=OUT'], 'exclude each other'),
    (['positional_argument'], 'unexpected arguments'),
]


@pytest.mark.parametrize('args,message', BAD_FLAGS)
def test_bad_flags_fail_fast_with_one_line(tmp_path, args, message):
  out = tmp_path / 'out'
  args = [a.replace('OUT', str(out)) for a in args]
  if (
      not any(a.startswith('--output_dir') for a in args)
      and '--resume' not in args
  ):
    args.append(f'--output_dir={out}')
  # A seed of its own names the default output directory runs/<..>-seed<N>-*.
  seed = random.randrange(10**8, 10**9)
  result = _run(*args, f'--seed={seed}')
  assert result.returncode != 0
  lines = _lines(result.stderr)
  assert len(lines) == 1, (result.stdout, result.stderr)
  assert lines[0].startswith('run_experiment.py: error: ')
  assert message in lines[0]
  assert result.stdout == ''
  assert not out.exists()  # nothing written, no comparison.csv
  assert not glob.glob(os.path.join(REPO, 'runs', f'*-seed{seed}-*'))


_NO_TF_WRAPPER = textwrap.dedent("""
    import atexit, runpy, sys
    atexit.register(lambda: print(
        'TENSORFLOW_IMPORTED=%s' % ('tensorflow' in sys.modules)))
    sys.argv = [{script!r}] + sys.argv[1:]
    runpy.run_path({script!r}, run_name='__main__')
""")


@pytest.mark.parametrize(
    'args', [['--method=nope'], ['--rounds=0'], ['--resume']]
)
def test_bad_flags_are_rejected_before_tensorflow_is_imported(args):
  result = subprocess.run(
      [sys.executable, '-c', _NO_TF_WRAPPER.format(script=SCRIPT), *args],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert result.returncode == 2, result.stderr
  assert 'run_experiment.py: error:' in result.stderr
  assert 'TENSORFLOW_IMPORTED=False' in result.stdout


# ------------------------------------------------------------ a real run


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('cli') / 'run'
  run = TrackedRun(*TINY, f'--output_dir={out}')
  return out, run


def _table_rows(stdout):
  return {
      line.split('|')[1].strip(): line
      for line in stdout.splitlines()
      if line.startswith('| ') and not line.startswith('| method')
  }


def test_tiny_run_writes_the_comparison(tiny_run):
  out, run = tiny_run
  assert run.returncode == 0, run.describe()
  assert set(_table_rows(run.stdout)) == {'ditto', 'global', 'local'}
  assert '| method | benign_mean_accuracy |' in run.stdout
  with open(out / 'comparison.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['method'] for r in rows] == ['ditto', 'global', 'local']
  for row in rows:
    assert 0.0 <= float(row['benign_mean_accuracy']) <= 1.0
    assert row['rounds'] == '2'
  with open(out / 'flags.json') as f:
    recorded = json.load(f)
  assert recorded['dataset'] == 'synthetic'
  assert [c['method'] for c in recorded['configs']] == [
      'ditto',
      'global',
      'local',
  ]
  for config in recorded['configs']:
    assert config['rounds'] == 2 and config['clients_per_round'] == 3
    assert config['eval_every'] == 1
  assert recorded['flags']['max_clients'] == 6
  for method in ('ditto', 'global', 'local'):
    with open(out / method / 'metrics.csv', newline='') as f:
      assert [r['round'] for r in csv.DictReader(f)] == ['0', '1']
    with open(out / method / 'summary.json') as f:
      summary = json.load(f)
    assert summary['num_clients'] == 6
    assert summary['config']['lam'] == (0.0 if method == 'local' else 1.0)


def test_tiny_run_leaves_no_worker_behind(tiny_run):
  _, run = tiny_run
  assert run.returncode == 0, run.describe()
  assert run.workers, 'the run should have started a TFF worker_binary'
  _assert_workers_stopped(run)


def test_rerun_into_the_same_directory_needs_resume_or_overwrite(tiny_run):
  out, first = tiny_run
  assert first.returncode == 0, first.describe()
  comparison = (out / 'comparison.csv').read_bytes()
  run = TrackedRun(*TINY, f'--output_dir={out}')
  assert run.returncode != 0, run.describe()
  last = _lines(run.stderr)[-1]
  assert last.startswith('run_experiment.py: error: ')
  assert '--resume' in last and '--overwrite' in last
  assert 'Traceback' not in run.stderr, run.describe()
  assert (out / 'comparison.csv').read_bytes() == comparison
  _assert_workers_stopped(run)


def _without_seconds(path):
  with open(path, newline='') as f:
    return [
        {k: v for k, v in row.items() if k != 'seconds'}
        for row in csv.DictReader(f)
    ]


def test_resume_of_a_finished_run_does_nothing_and_succeeds(tiny_run):
  out, first = tiny_run
  assert first.returncode == 0, first.describe()
  before = {
      m: _without_seconds(out / m / 'metrics.csv')
      for m in ('ditto', 'global', 'local')
  }
  comparison = _without_seconds(out / 'comparison.csv')
  run = TrackedRun(*TINY, f'--output_dir={out}', '--resume')
  assert run.returncode == 0, run.describe()
  assert set(_table_rows(run.stdout)) == {'ditto', 'global', 'local'}
  assert 'round 1/2' not in run.stdout  # no round was trained again
  for method, rows in before.items():
    assert _without_seconds(out / method / 'metrics.csv') == rows
  # The restored final models evaluate to the very same numbers.
  assert _without_seconds(out / 'comparison.csv') == comparison
  _assert_workers_stopped(run)


def test_resume_with_only_the_output_dir_continues_the_recorded_run(
    tiny_run, tmp_path
):
  out, first = tiny_run
  assert first.returncode == 0, first.describe()
  copy = tmp_path / 'copy'
  shutil.copytree(out, copy)
  flags_before = (copy / 'flags.json').read_text()
  run = TrackedRun(f'--output_dir={copy}', '--resume')
  _assert_workers_stopped(run)
  assert (copy / 'flags.json').read_text() == flags_before
  assert run.returncode == 0, run.describe()
  assert _without_seconds(copy / 'comparison.csv') == _without_seconds(
      out / 'comparison.csv'
  )


def test_skl_strength_defaults_to_the_dataset_preset():
  """--skl_lam unset takes the preset (FEMNIST 0.001); set, it overrides."""

  femnist = experiment_defaults.build_configs('femnist', ['skl'], {})[0]
  assert femnist.skl_lam == 0.001
  vehicle = experiment_defaults.build_configs('vehicle', ['skl'], {})[0]
  assert vehicle.skl_lam == 0.01
  given = experiment_defaults.build_configs(
      'femnist', ['skl'], {'skl_lam': 0.05}
  )[0]
  assert given.skl_lam == 0.05
  defined = _run_experiment_flags()
  assert defined['skl_lam']['default'] is None

"""The README's "Using the pieces in your own TFF code" example runs as written.

The test takes the first ```python block under that heading and executes it
unchanged (its temporary directory is redirected into pytest's tmp_path), then
checks what the example claims: three rounds of Ditto, each sampled client's
personalized model written and committed, and the global model returned.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

import repo_paths
from tff_ditto import runtime

REPO = repo_paths.REPO
HEADING = '## Using the pieces in your own TFF code'


def readme_example() -> str:
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  assert HEADING in text, f'README.md has no {HEADING!r} section'
  section = text.split(HEADING, 1)[1].split('\n## ', 1)[0]
  match = re.search(r'^```python\n(.*?)^```', section, re.M | re.S)
  assert match, f'no ```python block in the README section {HEADING!r}'
  return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(tempfile, 'mkdtemp', lambda *a, **k: str(tmp_path))
  context = runtime.current_context()
  namespace = {'__name__': '__readme_example__'}
  try:
    exec(compile(readme_example(), 'README.md example', 'exec'), namespace)
  finally:
    runtime.restore_context(context)  # the example installs its own worker

  printed = capsys.readouterr().out.strip().splitlines()
  assert [line.split()[0] for line in printed] == ['0', '1', '2']
  store, w, v_0 = namespace['store'], namespace['w'], namespace['v_0']
  # Rounds 0, 1, 2 trained clients {0, 10, 20}, {1, 11, 21}, {2, 12, 22}.
  expected = np.full(store.num_clients, -1)
  for round_num in range(3):
    expected[[round_num, round_num + 10, round_num + 20]] = round_num
  np.testing.assert_array_equal(store.versions, expected)
  assert os.path.dirname(os.path.dirname(store.read_path(0))) == str(tmp_path)
  global_weights = list(w.trainable) + list(w.non_trainable)
  assert [x.shape for x in v_0] == [np.shape(x) for x in global_weights]
  initial = namespace['initial']
  assert any(not np.array_equal(a, b) for a, b in zip(v_0, initial.trainable))
  assert all(np.all(np.isfinite(x)) for x in v_0)
  train = namespace['output'].metrics['client_work']['train']
  assert np.isfinite(train['global_train_loss'])
  assert np.isfinite(train['personal_train_loss'])

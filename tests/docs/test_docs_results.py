"""docs/results.md's generated tables match the committed results.

`scripts/write_results_doc.py` renders the blocks between `<!-- begin
generated: ... -->` and `<!-- end generated -->` from files under results/;
this fails when a block is stale (run the script) or its source is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import textwrap

import pytest

import repo_paths

REPO = repo_paths.REPO


def _load_script():
  spec = importlib.util.spec_from_file_location(
      'write_results_doc', os.path.join(REPO, 'scripts', 'write_results_doc.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


write_results_doc = _load_script()


def _has_commit(rev: str) -> bool:
  try:
    return (
        subprocess.run(
            ['git', 'cat-file', '-e', f'{rev}^{{commit}}'],
            cwd=REPO,
            capture_output=True,
        ).returncode
        == 0
    )
  except OSError:
    return False


def test_results_page_is_up_to_date():
  with open(os.path.join(REPO, write_results_doc.DOC_PATH)) as f:
    text = f.read()
  revs = {
      rev
      for spec in re.findall(write_results_doc.BEGIN.pattern, text, re.M)
      for rev in re.findall(r'\brev=(\S+)', spec)
  }
  missing = sorted(rev for rev in revs if not _has_commit(rev))
  if missing:
    pytest.skip(
        f'git history without {missing} (shallow clone?): pinned blocks cannot'
        ' render'
    )
  assert '<!-- begin generated:' in text
  rendered = write_results_doc.render(text, REPO)
  assert (
      rendered == text
  ), 'docs/results.md is stale: run python scripts/write_results_doc.py'


def test_render_replaces_only_generated_blocks(tmp_path):
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'table2_toy.csv').write_text(textwrap.dedent("""\
      method,column,attack,ratio,cell_id,status,ours_mean,ours_std,paper_mean,paper_std,paper_source
      Global,clean,none,0.0,g,done,0.84626,0.1165,0.804,,table1
      Global,A1 50%,a1,0.5,g1,pending: not run yet,,,,,
      EWC,clean,none,0.0,e,pending: not run yet,,,,,
      EWC,A1 50%,a1,0.5,e1,done,0.729,0.147,,,
      Mapper,clean,none,0.0,m,pending: not run yet,,,,,
      Mapper,A1 50%,a1,0.5,m1,pending: not run yet,,,,,
      """))
  page = (
      'Hand-written 0.5.\n<!-- begin generated: table table=table2 dataset=toy'
      ' -->\nold\n<!-- end generated -->\nAfter.'
  )
  rendered = write_results_doc.render(page, str(tmp_path))
  assert rendered.startswith('Hand-written 0.5.\n<!-- begin generated:')
  assert rendered.endswith('<!-- end generated -->\nAfter.')
  assert 'old' not in rendered
  assert '| Global | 0.846 (0.117); paper 0.804 | – |' in rendered
  assert '| EWC | – | 0.729 (0.147) |' in rendered
  assert 'Mapper' not in rendered  # no result at all: left out
  assert write_results_doc.render(rendered, str(tmp_path)) == rendered


def test_unknown_block_kind_is_an_error(tmp_path):
  with pytest.raises(ValueError, match='Unknown generated block kind'):
    write_results_doc.render(
        '<!-- begin generated: nonsense -->\n<!-- end generated -->',
        str(tmp_path),
    )


def test_a_table_renders_from_another_report_folder(tmp_path):
  folder = tmp_path / 'results' / 'paper_budget'
  folder.mkdir(parents=True)
  (folder / 'table1_toy.csv').write_text(textwrap.dedent("""\
      method,column,attack,ratio,cell_id,status,ours_mean,ours_std,paper_mean,paper_std,paper_source
      Global,clean,none,0.0,g,derived,0.5,0.1,0.804,,table1
      """))
  page = (
      '<!-- begin generated: table table=table1 dataset=toy '
      'report=results/paper_budget -->\n<!-- end generated -->'
  )
  rendered = write_results_doc.render(page, str(tmp_path))
  assert '| Global | 0.500 (0.100); paper 0.804 |' in rendered
  assert 'results/paper_budget/table1_toy.csv' in rendered


def test_claims_render_from_a_reports_summary(tmp_path):
  folder = tmp_path / 'results' / 'paper_budget'
  folder.mkdir(parents=True)
  (folder / 'REPORT.md').write_text(textwrap.dedent("""\
      # Reproduction report

      ## The paper's claims

      How each verdict is reached.

      | claim | verdict |
      |---|---|
      | Ditto more robust than global | reproduced |

      ## toy

      | method | clean |
      """))
  page = (
      '<!-- begin generated: claims report=results/paper_budget -->\n'
      '<!-- end generated -->'
  )
  rendered = write_results_doc.render(page, str(tmp_path))
  assert '| Ditto more robust than global | reproduced |' in rendered
  assert '| method | clean |' not in rendered
  assert 'results/paper_budget/REPORT.md' in rendered
  (folder / 'REPORT.md').write_text('# Reproduction report\n')
  with pytest.raises(ValueError, match="The paper's claims"):
    write_results_doc.render(page, str(tmp_path))

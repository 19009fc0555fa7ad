"""Every relative link in README.md and docs/*.md points at something that exists.

A link `[text](path)` or `![alt](path)` must resolve, relative to the page, to
a file or folder inside the repository; `path#anchor` and `#anchor` must name a
heading of the target page (GitHub's anchors: lower case, punctuation dropped,
spaces to hyphens, `-1`, `-2`, ... for repeats). Web links are not followed.
Every docs/ page must be linked from the README.
"""

from __future__ import annotations

import glob
import os
import re

import pytest

import repo_paths

REPO = repo_paths.REPO
PAGES = ['README.md'] + sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, 'docs', '*.md'))
)

_FENCE = re.compile(r'^\s*(```|~~~)')
_CODE_SPAN = re.compile(r'(`+)(.+?)\1')
_LINK = re.compile(r'!?\[([^\]]*)\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')


def _prose_lines(text: str):
  """(line number, line) outside fenced code blocks."""
  inside = False
  for number, line in enumerate(text.split('\n'), 1):
    if _FENCE.match(line):
      inside = not inside
      continue
    if not inside:
      yield number, line


def links(text: str) -> list[tuple[int, str]]:
  """(line number, target) of every markdown link outside code."""
  found = []
  for number, line in _prose_lines(text):
    # Code spans cannot hold links, but link texts may hold code spans.
    line = _CODE_SPAN.sub(lambda m: 'x' * len(m.group(0)), line)
    found += [(number, m.group(2)) for m in _LINK.finditer(line)]
  return found


def slug(heading: str) -> str:
  """GitHub's anchor of a heading's text."""
  text = _LINK.sub(lambda m: m.group(1), heading)  # a link's text only
  text = text.replace('`', '').lower()
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


def anchors(text: str) -> set[str]:
  seen: dict[str, int] = {}
  result = set()
  for _, line in _prose_lines(text):
    match = _HEADING.match(line)
    if not match:
      continue
    base = slug(match.group(2))
    count = seen.get(base, 0)
    seen[base] = count + 1
    result.add(base if count == 0 else f'{base}-{count}')
  return result


def _read(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


def test_slug_follows_github():
  assert slug('Where `v_k` lives, and why') == 'where-v_k-lives-and-why'
  assert slug("Fashion-MNIST (Ditto's 500-device partition)") == (
      'fashion-mnist-dittos-500-device-partition'
  )
  assert (
      slug('Bucketing (paper exp3, beta = 0)') == 'bucketing-paper-exp3-beta--0'
  )
  assert anchors('# A\n## A\n```\n# not a heading\n```\n### A') == {
      'a',
      'a-1',
      'a-2',
  }


def test_links_skip_code():
  text = 'see [a](x.md) and `[b](y.md)`\n```\n[c](z.md)\n```\n[`d`](w.md#k)'
  assert links(text) == [(1, 'x.md'), (5, 'w.md#k')]


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_resolve(page):
  text = _read(os.path.join(REPO, page))
  problems = []
  for number, target in links(text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    resolved = (
        os.path.normpath(os.path.join(REPO, os.path.dirname(page), path))
        if path
        else os.path.join(REPO, page)
    )
    where = f'{page}:{number}: {target}'
    if os.path.relpath(resolved, REPO).startswith('..'):
      problems.append(f'{where} leaves the repository')
    elif not os.path.exists(resolved):
      problems.append(f'{where} does not exist')
    elif anchor:
      if not resolved.endswith('.md'):
        problems.append(f'{where}: anchor on a file that is not markdown')
      elif anchor not in anchors(_read(resolved)):
        problems.append(f'{where}: no heading with that anchor')
  assert not problems, '\n'.join(problems)


def test_every_docs_page_is_linked_from_the_readme():
  linked = {
      os.path.normpath(target.partition('#')[0])
      for _, target in links(_read(os.path.join(REPO, 'README.md')))
  }
  missing = [page for page in PAGES[1:] if page not in linked]
  assert not missing, f'docs pages not linked from README.md: {missing}'

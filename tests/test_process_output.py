"""The failure text tests show of a crashed subprocess."""

import process_output


def test_a_crash_shows_its_stack_without_the_module_list():
  stderr = (
      'I1207 log line\n'
      'Fatal Python error: Segmentation fault\n\n'
      'Thread 0x1 (most recent call first):\n  File "x.py", line 3 in f\n\n'
      'Extension modules: numpy.core._multiarray_umath, '
      + 'm, ' * 2000
  )
  text = process_output.failure_text(stderr)
  assert text.startswith('Fatal Python error: Segmentation fault')
  assert 'x.py", line 3' in text
  assert 'Extension modules' not in text


def test_an_ordinary_failure_shows_its_tail():
  stderr = 'x' * 5000 + 'ValueError: bad flag'
  text = process_output.failure_text(stderr)
  assert text.endswith('ValueError: bad flag') and len(text) == 3000

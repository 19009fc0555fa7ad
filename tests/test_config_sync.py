"""The TF-free lists training_config keeps beside the library match it.

(The method, aggregator and attack names are defined once, in
`tff_ditto.names`; tests/test_names.py checks their registries.)
"""

from tff_ditto import batch_streams
from tff_ditto import training_config


def test_batch_stream_names_match_the_batch_streams_module():
  assert training_config.BATCH_STREAMS == batch_streams.BATCH_STREAMS

"""tff-ditto: Ditto personalized federated learning and robust aggregation in TFF."""

import os as _os

# TF/TFF C++ logs are noise for users of this library; set before TensorFlow is
# imported (and inherited by TFF's worker process). An explicit user setting wins.
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

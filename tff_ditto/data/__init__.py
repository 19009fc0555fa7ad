"""Federated datasets for tff-ditto (LEAF JSON, TFF SQLite, Fashion-MNIST, synthetic)."""

from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays

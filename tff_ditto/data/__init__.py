"""Federated datasets for tff-ditto (LEAF JSON, TFF SQLite, Fashion-MNIST, synthetic)."""

from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays
from tff_ditto.data.fashion_mnist import load_fashion_mnist
from tff_ditto.data.leaf import load_celeba
from tff_ditto.data.leaf import load_femnist
from tff_ditto.data.leaf import load_leaf_synthetic
from tff_ditto.data.leaf import load_vehicle
from tff_ditto.data.registry import DATASET_NAMES
from tff_ditto.data.registry import load_dataset
from tff_ditto.data.synthetic import make_synthetic
from tff_ditto.data.synthetic import write_leaf_json
from tff_ditto.data.tff_datasets import load_tff_celeba
from tff_ditto.data.tff_datasets import load_tff_emnist

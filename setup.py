"""Installs the tff_ditto library.

Dependencies are pinned in requirements.lock and installed with `--no-deps`
(see README): TFF 0.87.0 pins jaxlib==0.4.14, which the package registry no
longer serves, so a resolver cannot satisfy TFF's own metadata.
"""

import setuptools

setuptools.setup(
    name='tff-ditto',
    version='0.1.0',
    description=(
        'Ditto (fair and robust personalized federated learning) and '
        'Byzantine-robust aggregation with bucketing, in TensorFlow Federated.'
    ),
    packages=setuptools.find_packages(include=['tff_ditto', 'tff_ditto.*']),
    # The paper's Tables 1-3, read by tff_ditto.reproduction.paper_tables.
    package_data={'tff_ditto': ['paper_tables.csv']},
    python_requires='>=3.11,<3.12',
    install_requires=[
        'tensorflow-federated==0.87.0',
        'tensorflow==2.14.*',
        'tensorflow-datasets==4.9.3',
        'numpy~=1.25',
        'pandas==2.1.*',
        'absl-py==1.4.0',
        'matplotlib==3.8.*',
    ],
)

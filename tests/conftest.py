import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def autoencoder():
    import torch

    from models.triplane.loading import load_autoencoder

    torch.set_num_threads(2)
    return load_autoencoder()

"""Latent files: an edit's latent travels with the reference its chain started from, and a
damaged file is a clear `bad_input`, never a traceback."""
import pytest
import torch

from backend.errors import JobError
from backend.results import load_latent, load_latent_with_reference, save_latent

SHAPE = (3, 8, 16, 16)


def test_an_edit_latent_round_trips_with_its_reference(tmp_path):
    latent, reference = torch.randn(1, *SHAPE), torch.randn(1, *SHAPE)
    path = str(tmp_path / "latent.safetensors")
    save_latent(path, latent, {"op": "edit"}, reference=reference)
    got, ref, meta = load_latent_with_reference(path, SHAPE)
    assert torch.equal(got, latent) and torch.equal(ref, reference) and meta["op"] == "edit"
    assert torch.equal(load_latent(path, SHAPE)[0], latent)
    save_latent(path, latent, {"op": "generate"})  # no reference: a chain starts here
    assert load_latent_with_reference(path, SHAPE)[1] is None


@pytest.mark.parametrize("reference, message", [(torch.full((1, *SHAPE), float("nan")), "reference contains non-finite"),
                                                (torch.zeros(1, 3, 8, 8, 8), "reference has shape")])
def test_a_damaged_reference_is_bad_input(tmp_path, reference, message):
    path = str(tmp_path / "latent.safetensors")
    save_latent(path, torch.zeros(1, *SHAPE), {"op": "edit"}, reference=reference)
    with pytest.raises(JobError, match=message) as err:
        load_latent_with_reference(path, SHAPE)
    assert err.value.code == "bad_input"

"""The instruction kind reader: held-out removal phrasings read as removals, other kinds not."""
import pytest

from models.edit.kinds import load_kind_reader
from models.text.encoder import shared_encoder


@pytest.fixture(scope="module")
def reader():
    return load_kind_reader()


def pooled(texts):
    return shared_encoder().encode(texts).pooled


def test_the_kind_reader_reads_held_out_removal_phrasings(reader):
    texts = ["get rid of the handle", "without the armrests", "remove the spoiler",   # removals
             "make the handle blue", "make the legs longer", "give it four legs", "add armrests", "no more stripes"]
    p = reader.probability(pooled(texts), "remove_part").numpy()
    assert (p[:3] > 0.5).all() and (p[3:] < 0.5).all(), dict(zip(texts, p.round(2)))


def test_the_pattern_head_reads_which_pattern_held_out_frames_add(reader):
    asked = {"cover the body in red stripes": "stripes", "i want a blue checker pattern on the seat": "checker",
             "i want white polka dots on the cap": "dots", "cover the walls in a green checker pattern": "checker"}
    assert reader.pattern(pooled(list(asked))) == list(asked.values())

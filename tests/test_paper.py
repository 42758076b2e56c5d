"""The paper's numbers as data: internal consistency catches transcription typos."""

from __future__ import annotations

import numpy as np
import pytest

from cutpaste_lib import paper
from cutpaste_lib.data import MVTEC_CATEGORIES, category_info

# Each published value is rounded to 0.1, and so is the stated mean: the mean of the rounded
# values may differ from the stated mean by at most 0.05 + 0.05.
ROUNDING = 0.1 + 1e-9


@pytest.mark.parametrize("column", paper.TABLE1_COLUMNS)
def test_table1_category_values_reproduce_the_stated_means(column):
    values = [paper.TABLE1[c][column] for c in paper.CATEGORIES]
    assert abs(np.mean(values) - paper.TABLE1_MEAN[column]) <= ROUNDING


def test_table2_category_values_reproduce_the_stated_mean():
    values = [paper.TABLE2_PIXEL[c] for c in paper.CATEGORIES]
    assert abs(np.mean(values) - paper.TABLE2_MEAN) <= ROUNDING


def test_every_table_covers_exactly_the_15_mvtec_categories():
    assert set(paper.CATEGORIES) == set(MVTEC_CATEGORIES)
    assert len(paper.CATEGORIES) == 15
    assert set(paper.TABLE1) == set(paper.CATEGORIES) == set(paper.TABLE2_PIXEL)


def test_texture_object_split_agrees_with_the_data_module():
    assert not set(paper.TEXTURES) & set(paper.OBJECTS)
    assert (len(paper.TEXTURES), len(paper.OBJECTS)) == (5, 10)
    for c in paper.CATEGORIES:
        assert paper.kind(c) == category_info(c).kind


def test_values_are_percentages_and_ensemble_is_never_far_below_3way():
    for c in paper.CATEGORIES:
        row = paper.TABLE1[c]
        assert all(50.0 <= row[col] <= 100.0 for col in paper.TABLE1_COLUMNS)
        # Table 1's ensemble is built from 3-way models: it is within 0.1 of 3-way or above it.
        assert row["ensemble"] >= row["3way"] - 0.1


def test_union_table5_lies_between_the_other_binary_variants_on_average():
    # A sanity check on the transcription: Union (94.3) sits between CutPaste (90.9) and 3-way (95.2).
    assert paper.TABLE1_MEAN["cutpaste"] < paper.TABLE5_UNION["all"] < paper.TABLE1_MEAN["3way"]
    t, o = paper.TABLE5_UNION["texture"], paper.TABLE5_UNION["object"]
    assert abs((5 * t + 10 * o) / 15 - paper.TABLE5_UNION["all"]) <= ROUNDING


def test_lookups():
    assert paper.image_auroc("screw", "cutpaste") == 54.4
    assert paper.image_auroc("synth_grid", "3way") is None
    assert paper.pixel_auroc("tile") == 90.5
    assert paper.pixel_auroc("synth_grid") is None
    assert paper.kind("synth_grid") is None
    with pytest.raises(ValueError, match="valid are cutpaste, scar, 3way, ensemble"):
        paper.image_auroc("screw", "three_way")


def test_tables_are_read_only():
    with pytest.raises(TypeError):
        paper.TABLE1["screw"]["3way"] = 99.0  # type: ignore[index]
    with pytest.raises(TypeError):
        paper.TABLE2_PIXEL["tile"] = 99.0  # type: ignore[index]
    assert "2104.04015" in paper.CITATION


def test_every_outside_reference_point_names_its_source():
    assert set(paper.OTHER_SOURCES) == set(paper.OTHER_IMPLEMENTATIONS)
    assert all(src.startswith("https://github.com/") for src in paper.OTHER_SOURCES.values())

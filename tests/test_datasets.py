"""The dataset registry (data_pipeline/datasets.py): one description per dataset, used by the
data configs, the readers' dispatch and the TFDS builders."""

import pytest

from data_pipeline import datasets, labels, tfds_builders
from data_pipeline.configs import get_data_config


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_each_dataset_is_described_once_and_used(name: str) -> None:
    spec = datasets.get(name)
    config = get_data_config(name)
    assert (config.num_frames, config.image_size) == (spec.num_frames, spec.image_size)
    assert (config.fold == 0) == (not spec.has_folds)
    assert spec.tfds_name in tfds_builders.BUILDERS
    if spec.class_names is not None:
        assert spec.class_names == labels.class_names(name)


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="dfew, ferv39k, mafw, synthetic, custom"):
        datasets.get("affwild")
    with pytest.raises(ValueError, match="unknown dataset 'affwild'"):
        get_data_config("affwild")

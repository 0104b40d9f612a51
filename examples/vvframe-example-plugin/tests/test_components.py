"""The package's components keep vvframe's contracts: one ``vvframe.testing`` call per component."""

import pytest

from vvframe.testing import check_all_components, check_component


@pytest.mark.parametrize("kind, name", [("models", "tiny_tdnn"), ("stages", "count_params")])
def test_each_component_keeps_the_contract_of_its_kind(kind, name):
    check_component(kind, name)


def test_the_model_keeps_it_with_other_arguments_too():
    check_component("models", "tiny_tdnn", {"embed_dim": 24, "channels": 32})


def test_every_component_the_package_declares_is_checked():
    assert check_all_components(distribution="vvframe-example-plugin") == []

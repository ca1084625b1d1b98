import pytest

from personalize.demo import blank_card, demo_card


@pytest.fixture
def card():
    """The demo card, powered on, with the demo DF not yet selected."""
    return demo_card()


@pytest.fixture
def blank():
    return blank_card()

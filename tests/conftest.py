"""Session-wide fixtures shared by several test modules."""

import pytest

from train_helpers import have_tts, learning_run


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """The learning check's corpus and trained mini model (train_helpers.learning_run), trained once per
    session for the learning test and the transcription tests."""
    if not have_tts():
        pytest.skip("espeak-ng/sox not installed")
    return learning_run(tmp_path_factory.mktemp("learned"))

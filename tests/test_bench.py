"""cdlib.bench: the training-speed probe runs every learned model through the one training loop and its hooks."""
import math

import pytest

from cdlib.bench import train_speed


@pytest.mark.parametrize("name", ["factorized", "tang2025"])  # tang2025: its MoCo step needs the hooks' views
def test_train_speed_runs_through_the_training_loop(name):
    speed = train_speed(name, steps=1)
    assert math.isfinite(speed) and speed > 0

"""Training tells how it is going: a line per epoch with the losses and the time left."""

from __future__ import annotations

import numpy as np

from anomalake.models.families.dense_autoencoder import DenseAutoencoder, DenseAutoencoderConfig


def test_each_epoch_prints_its_losses_and_the_time_left(capsys):
    x = np.random.default_rng(0).normal(size=(200, 8, 2)).astype(np.float32)
    config = DenseAutoencoderConfig(
        input_shape=(8, 2), feature_names=("a", "b"), hidden=(8, 2), epochs=3, patience=5, batch_size=50, verbose=2
    )
    DenseAutoencoder(config).fit(x[:150], validation=x[150:])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("loss" in line and "val_loss" in line and "s left at most" in line for line in lines)
    assert lines[-1].endswith("about 0s left at most")

import pytest
import torch

from resnet_viz import ResNetConfig
from resnet_viz.data import synthetic_dataset
from resnet_viz.training import Trainer, TrainSettings

TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))  # trains in a blink


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained():
    """TINY trained for real on synthetic data (float32), and that data: for the quantization tests."""
    data = synthetic_dataset(train_per_class=80, val_per_class=30)
    trainer = Trainer(TINY, data, TrainSettings(epochs=4, batch_size=32, lr=0.05, precision="fp32"))
    trainer.run()
    return trainer.model.float().eval(), data

"""The PyTorch twin of the README model (convnet_core.presets.readme_layers), shared by the
benchmarks so both compare against the same network."""


def readme_model(nn):
    """nn.Sequential of the README model: 'same' 3x3 convs, 2x2 pools, 784 -> 64 -> 10."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),  # (8, 28, 28)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (8, 14, 14)
        nn.Conv2d(8, 16, 3, padding=1),  # (16, 14, 14)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (16, 7, 7)
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )

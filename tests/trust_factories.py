"""A legitimate, importable torch network factory for the model-trust tests."""

import torch


def make_net(width: int = 8, inputs: int = 4, classes: int = 3) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(inputs, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, classes))

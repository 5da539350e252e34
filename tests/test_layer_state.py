"""Per-epoch layer schedules and weight-decay groups, the two things training loops do for
layers with state of their own (`nas.layer_state`)."""

from __future__ import annotations

import torch
from torch import nn

from nas.layer_state import advance_schedules, weight_decay_groups


class Scheduled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("heard", torch.tensor([-1.0, -1.0]))

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.heard = torch.tensor([float(epoch), float(epochs)])


class Quantizer(nn.Module):
    no_weight_decay = True

    def __init__(self) -> None:
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(1))


def test_every_scheduled_layer_hears_the_epoch() -> None:
    model = nn.Sequential(Scheduled(), nn.Linear(2, 2), nn.Sequential(Scheduled()))
    assert advance_schedules(model, 3, 10) == 2
    assert model[0].heard.tolist() == [3.0, 10.0] and model[2][0].heard.tolist() == [3.0, 10.0]


def test_marked_parameters_get_no_weight_decay_and_the_rest_keep_it() -> None:
    model = nn.Sequential(nn.Linear(2, 2), Quantizer())
    groups = weight_decay_groups(model, model.parameters(), 3e-4)
    assert [g["weight_decay"] for g in groups] == [3e-4, 0.0]
    assert groups[1]["params"] == [model[1].lower]
    assert len(groups[0]["params"]) == 2
    # a plain model: one group, as before
    plain = nn.Linear(2, 2)
    assert len(weight_decay_groups(plain, plain.parameters(), 1e-3)) == 1
    # an SGD step leaves the exempt parameter where its gradient alone takes it
    opt = torch.optim.SGD(groups, lr=1.0, weight_decay=3e-4)
    model[1].lower.grad = torch.zeros(1)
    model[0].weight.grad = torch.zeros(2, 2)
    model[0].bias.grad = torch.zeros(2)
    model[1].lower.data.fill_(1.0)
    opt.step()
    assert float(model[1].lower.detach()) == 1.0

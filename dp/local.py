"""Record-level DP for a client's local training: DP-SGD with Opacus.

Abadi et al. (CCS 2016): per-sample gradient clipping to ``max_grad_norm``, Gaussian noise of
standard deviation ``noise_multiplier * max_grad_norm``, Poisson sampling of each batch with
rate ``batch_size / len(data)``. This is a second guarantee, for the records inside one
client's data, independent of the user-level guarantee of the aggregate; its epsilon is
computed by Opacus's accountant and, for the same event, by dp_accounting (RDP and PLD), and is
recorded beside the round in the client's ledger.

Secure mode: Opacus's ``secure_mode=True`` needs ``torchcsprng``, which has no release for this
torch (2.13) on PyPI, so it cannot be installed here. The safest working mode is used instead:
``secure_mode=False`` with a noise generator seeded with 64 fresh bits from the operating
system (not a fixed or time-based seed). The noise is then floating-point Gaussian from a
non-cryptographic generator, which is exposed to the attacks of Mironov (CCS 2012); this
weakness is confined to the record-level guarantee. The user-level guarantee of the released
aggregate rests only on the integer noise of :mod:`dp.noise`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import ParameterError
from .events import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent, to_json

SECURE_MODE = False  # torchcsprng is not installable for torch 2.13; see the module docstring


@dataclass(frozen=True)
class LocalTrainingReport:
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    epsilon_opacus: float
    epsilon_rdp: float  # dp_accounting, RDP
    epsilon_pld: float | None  # dp_accounting, PLD (None when not asked for)
    delta: float

    def record(self) -> dict[str, Any]:
        event = SelfComposedDpEvent(PoissonSampledDpEvent(self.sample_rate,
                                                          GaussianDpEvent(self.noise_multiplier)),
                                    self.steps)
        return {"mechanism": "dp-sgd (opacus)", "secure_mode": SECURE_MODE,
                "event": to_json(event), "delta": self.delta,
                "epsilon_opacus": self.epsilon_opacus, "epsilon_rdp": self.epsilon_rdp,
                "epsilon_pld": self.epsilon_pld, "max_grad_norm": self.max_grad_norm}


@lru_cache(maxsize=256)
def record_level_epsilon(*, sample_rate: float, noise_multiplier: float, steps: int,
                         delta: float, pld: bool = True) -> tuple[float, float | None]:
    """(RDP, PLD) epsilon of DP-SGD by dp_accounting (Poisson-sampled Gaussian, composed).
    PLD is the tighter but slower one (seconds); ``pld=False`` skips it (None)."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate,
                                            dp_accounting.GaussianDpEvent(noise_multiplier)),
        steps)
    rdp = rdp_privacy_accountant.RdpAccountant()
    rdp.compose(event)
    if not pld:
        return float(rdp.get_epsilon(delta)), None
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(event)
    return float(rdp.get_epsilon(delta)), float(acc.get_epsilon(delta))


def train_dp_sgd(model, features, labels, *, epochs: int, batch_size: int, lr: float,
                 noise_multiplier: float, max_grad_norm: float, delta: float,
                 pld: bool = True) -> LocalTrainingReport:
    """Train ``model`` in place with DP-SGD (Opacus, Poisson sampling); returns the report.
    Raises ImportError naming the extra when torch or Opacus is not installed."""
    try:
        import torch
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset
    except ImportError as exc:
        raise ImportError(f"DP-SGD needs the extra 'train' (pip install -c .ci/constraints.txt "
                          f"'secagg-hardened[train]'): {exc}") from None

    n = len(features)
    if n < 1 or batch_size < 1 or epochs < 1:
        raise ParameterError("need data, a positive batch size and at least one epoch")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0 and max_grad_norm > 0):
        raise ParameterError("noise_multiplier and max_grad_norm must be positive")
    loader = DataLoader(TensorDataset(features, labels), batch_size=min(batch_size, n))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    engine = PrivacyEngine(accountant="rdp", secure_mode=SECURE_MODE)
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=True, noise_generator=gen)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = 0
    for _ in range(epochs):
        for xb, yb in dp_loader:
            if len(xb) == 0:
                continue
            dp_opt.zero_grad()
            loss_fn(dp_model(xb), yb).backward()
            dp_opt.step()
            steps += 1
    sample_rate = min(batch_size, n) / n
    total_steps = epochs * math.ceil(n / min(batch_size, n))
    # the accountants log a warning per fractional order they skip; keep the output readable
    logging.disable(logging.WARNING)
    try:
        eps_opacus = float(engine.get_epsilon(delta))
        eps_rdp, eps_pld = record_level_epsilon(sample_rate=sample_rate,
                                                noise_multiplier=noise_multiplier,
                                                steps=total_steps, delta=delta, pld=pld)
    finally:
        logging.disable(logging.NOTSET)
    return LocalTrainingReport(total_steps, sample_rate, noise_multiplier, max_grad_norm,
                               eps_opacus, eps_rdp, eps_pld, delta)

"""dp: clipping, encoding to the ring, discrete noise, accounting, ledger and audit.

docs/architecture.md section 6. The distributed DP pipeline of Kairouz, Liu, Steinke (ICML 2021) and
Agarwal, Kairouz, Liu (NeurIPS 2021): flatten -> clip -> rotate -> scale -> conditional
randomized rounding -> Skellam or discrete Gaussian noise -> Z_{2^b}; the server decodes the
sum. ``dp`` does not import ``secagg`` (docs/architecture.md section 1); :mod:`protocol.dp_round`
composes them.

    from dp import flatten, clip, choose_encoding, encode, sample_noise, RdpAccountant
"""

from .accounting import RdpAccountant, fold_sampler_distance, plan_noise, pld_epsilon
from .encoding import EncodingPlan, choose_encoding, decode, encode, to_ring, wrap_probability
from .errors import (
    AccountingError,
    BudgetExceeded,
    BudgetMismatch,
    DPError,
    LedgerError,
    ParameterError,
    UpdateError,
)
from .events import DistributedDiscreteGaussianDpEvent, SkellamDpEvent
from .ledger import Budget, Ledger, open_ledger, verify
from .noise import noise_table, sample_noise
from .randomness import CryptoRandom
from .update import UpdateSpec, clip, flatten, unflatten

__all__ = [
    "AccountingError", "Budget", "BudgetExceeded", "BudgetMismatch", "CryptoRandom", "DPError",
    "DistributedDiscreteGaussianDpEvent", "EncodingPlan", "Ledger", "LedgerError",
    "ParameterError", "RdpAccountant", "SkellamDpEvent", "UpdateError", "UpdateSpec",
    "choose_encoding", "clip", "decode", "encode", "flatten", "fold_sampler_distance",
    "noise_table", "pld_epsilon", "plan_noise", "sample_noise", "to_ring", "unflatten",
    "open_ledger", "verify", "wrap_probability",
]

"""secagg: the cryptographic core of the privacy-hardened secure-aggregation framework.

numpy and cryptography only; no protocol state and no I/O (docs/architecture.md sections 1-2).
Modules: ring (Z_{2^b}), prg (mask expansion), keyagreement (X25519 + HKDF), shamir,
field (batched arithmetic in the word-size prime fields of the Shamir ring),
aead (share transport), identity (Ed25519), masking, graph (SecAgg+ Harary graph), params
(Bell et al. parameter finder), encoding (canonical bytes), errors, hazmat (explicit
randomness, tests only).
"""

from .aead import AeadContext, decrypt, encrypt
from .errors import (
    DecryptionError,
    DuplicateShareError,
    EncodingError,
    ForeignShareError,
    GraphParameterError,
    InsufficientSharesError,
    KeyAgreementError,
    RingError,
    SecAggError,
    SecAggTypeError,
    SecAggValueError,
    SeedError,
    ShamirError,
    ShapeError,
    SignatureError,
    ThresholdError,
    UndecodableSharesError,
)
from .graph import NeighbourGraph, complete_graph, harary_graph, public_shuffle
from .identity import SigningKey, VerifyKey
from .keyagreement import KdfContext, KeyPair, agree
from .masking import PairwiseMask, mask_input, pairwise_sign, remove_masks
from .params import GraphParameters, analyse_parameters, find_parameters
from .prg import MaskStream, expand, iter_chunks
from .ring import Ring
from .shamir import Decoded, Share, ShareTable, combine, decode, decode_many, split

__version__ = "0.1.0"

__all__ = [
    "AeadContext",
    "Decoded",
    "DecryptionError",
    "DuplicateShareError",
    "EncodingError",
    "ForeignShareError",
    "GraphParameterError",
    "GraphParameters",
    "InsufficientSharesError",
    "KdfContext",
    "KeyAgreementError",
    "KeyPair",
    "MaskStream",
    "NeighbourGraph",
    "PairwiseMask",
    "Ring",
    "RingError",
    "SecAggError",
    "SecAggTypeError",
    "SecAggValueError",
    "SeedError",
    "ShamirError",
    "ShapeError",
    "Share",
    "ShareTable",
    "SignatureError",
    "SigningKey",
    "ThresholdError",
    "UndecodableSharesError",
    "VerifyKey",
    "agree",
    "analyse_parameters",
    "combine",
    "complete_graph",
    "decode",
    "decode_many",
    "decrypt",
    "encrypt",
    "expand",
    "find_parameters",
    "harary_graph",
    "iter_chunks",
    "mask_input",
    "pairwise_sign",
    "public_shuffle",
    "remove_masks",
    "split",
]

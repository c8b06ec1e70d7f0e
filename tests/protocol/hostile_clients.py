"""Client machines that deal invalid secrets on purpose, for the server's reconstruction tests
(in process and over the network); the conformance server suite plays the same ones."""

from protocol.conformance.hostile import ShortKeyDealer, ShortSeedDealer

__all__ = ["ShortKeyDealer", "ShortSeedDealer"]

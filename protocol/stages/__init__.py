"""One module per stage of a round (Bonawitz et al. CCS 2017 section 4; Bell et al. CCS 2020
section 3), each with the client's handler, the server's collector (accept and close) and the
frozen hand-ons the stage passes to the next:

* :mod:`.advertise_keys` - Setup checked, key pairs and b_u made, U1 collected;
* :mod:`.share_keys` - key broadcast checked, shares dealt and routed, U2;
* :mod:`.masked_input` - shares held, the input awaited and masked, the running sum, U3;
* :mod:`.consistency_check` - U3 signed and the quorum checked (malicious mode);
* :mod:`.unmasking` - requests checked and answered, secrets reconstructed, masks removed;
* :mod:`.common` - the round constants of each side and the refusal signal.

:class:`protocol.client.ClientRound` and :class:`protocol.server.ServerRound` hold the hand-ons
and move between stages by :mod:`protocol.transitions`.
"""

"""The packet engines (pure core, I/O loop): the Hyperplane pipeline and the NAT gateway role,
the typed snapshot they are given, the session store they keep their sessions in (records
in a shared-memory file that outlives the process), and the AF_PACKET loop that runs them
(``python -m hyperplane.dataplane``).
"""

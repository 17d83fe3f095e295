"""The packet engines (pure core, I/O loop): the Hyperplane pipeline and the NAT gateway role,
the typed snapshot they are given, and the AF_PACKET loop that runs them (``python -m
hyperplane.dataplane``).
"""

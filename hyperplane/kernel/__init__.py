"""Every side effect on the kernel and the state directory: netlink (the one pyroute2 user),
the builder, processes, mounts, nftables, the VPC services and the state database.
"""

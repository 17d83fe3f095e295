"""The benchmark: Hyperplane measured side by side with the kernel's own NAT.

``runner`` builds the benchmark topology (``topology.yaml``: execution
environments, Hyperplane, one ENI per subnet, the VPC router, a server host)
and, beside it, a kernel reference (``reference``: the same chain of
namespaces where the kernel forwards and NATs with nftables masquerade, or
only routes).  ``workloads`` runs each workload through each path, rounds
interleaved; ``report`` prints the table and writes JSON, Markdown and an
SVG chart of the ratios.  ``probe`` holds the project's own clients and
server, run inside namespaces.
"""

"""hyperplane: AWS Lambda-in-VPC networking (Hyperplane ENIs, userspace NAT) on real namespaces."""

__version__ = "0.1.0"

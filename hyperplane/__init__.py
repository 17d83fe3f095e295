"""hyperplane: AWS Lambda-in-VPC networking (Hyperplane ENIs, userspace NAT) on real namespaces.

The package map: each subpackage is one role; a layer imports only from the
layers below it (``tests/unit/test_architecture.py`` keeps it so).

    errors       the project's exceptions, one place                          pure
    jsonline     the one JSON-line protocol of every Unix socket               I/O
    model/       the declarative account: the topology file (bounded YAML,     pure
                 one typed parser, frozen records), settings, timing, names,
                 and the records of ENIs, environments and addresses
    dataplane/   the packet engines of Hyperplane and of NAT gateways: the     pure core,
                 pipeline (sessions, NAT, TCP states, ICMP, fragments, ARP,    I/O loop
                 security-group admit) and the typed snapshot it is given;
                 ``sockets``/``loop``/``natgw_loop`` are its I/O side
    policy/      security groups (membership, rules, edits), host firewall     pure
                 scripts, reachability verdicts
    fabric/      which kernel objects a topology needs, and plan(old, new);   pure
                 the topology as a picture (DOT, mermaid)
    services/    processes inside namespaces: VPC DNS resolver (with its       I/O
                 codec), HTTP service, the hosts' real servers (MariaDB,
                 PostgreSQL, Redis, memcached; a listener, a proxy), reach
                 probe
    templates/   CloudFormation and SAM templates as topologies: the file      pure (load,
                 read with the short-form tags, SAM expanded offline,          sam, lint:
                 parameters, conditions, intrinsics, physical ids, cfn-lint;   a file and
                 the stack mapped onto the topology document                   libraries)
    kernel/      every side effect on the kernel and the state directory:     side effects
                 netlink (the one pyroute2 user), the builder, processes,
                 mounts, nftables, the VPC's services, the build cache,
                 supervised process specs, the state database
    controller/  the control plane process: the lifecycle model (pure), the    side effects
                 service that makes it real, its API, clock, snapshot
    emulator/    up / down, templates loaded, the running topology, requests  side effects
                 to the daemons, reach, cleanup, the supervisor: what the
                 CLI calls
    endpoint/    the AWS-compatible endpoint: SigV4, REST-JSON and query/XML   side effects
                 from botocore's models, handlers that ask the controller
    bench/       ``make bench``: Hyperplane beside the kernel's NAT            side effects
    cli/         click commands only: parse, call, print                      side effects

Layers, top to bottom: cli > bench > endpoint > emulator > controller > kernel >
(fabric, policy, services, templates) > dataplane > model; ``errors`` and ``jsonline`` sit
below them all.  ``lambda_vm`` (the execution environment: Python and Node.js runtimes, the EFS
check) is a sibling package that uses only ``errors``, ``jsonline`` and ``kernel``.
"""

__version__ = "0.2.0"

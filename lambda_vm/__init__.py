"""lambda_vm: execution environments of emulated Lambda functions.

An execution environment is a network namespace (made by ``hyperplane``'s
controller) in which ``lambda_vm.agent`` plays Lambda's init process: it serves the
Runtime API and the Extensions API on 127.0.0.1:9001 (``runtime_api``,
``extensions``, over h11: ``httpserver``), starts the code's extensions and the
function's runtime (``runtimes``; the built-in Python runtime, ``bootstrap``, runs in
the agent itself), and serves invocations one at a time over a Unix socket in the
state directory.  The namespace's only link leads to the Hyperplane process, so
everything the handler opens goes through the function's shared Hyperplane ENI.
``zygote`` forks the agents; docs/runtime.md describes what a runtime sees.
"""

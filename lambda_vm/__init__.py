"""lambda_vm: execution environments of emulated Lambda functions.

An execution environment is a network namespace (made by ``hyperplane``'s
controller) in which ``lambda_vm.agent`` runs one function's handler.  The
agent imports the handler once (the cold start's init) and then serves
invocations one at a time over a Unix socket in the state directory; the
namespace's only link leads to the Hyperplane process, so everything the
handler opens goes through the function's shared Hyperplane ENI.
"""

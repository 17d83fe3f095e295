"""The control plane process (side effects around a pure model): the lifecycle model of
functions, ENIs and environments, the service that makes it real, its API, clock and the
dataplane snapshot.
"""

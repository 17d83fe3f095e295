"""Controller: desired state of ENIs and environments, and the plans that reach it."""

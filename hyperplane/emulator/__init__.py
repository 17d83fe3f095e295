"""The running emulator (side effects), as the CLI uses it: up and down, the recorded run and
its views, requests to the daemons, reach, security groups, cleanup.
"""

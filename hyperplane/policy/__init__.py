"""Security policy (pure): security groups (membership, compiled rules, edits), host firewall
scripts, the ``sg list`` view and reachability verdicts.
"""

"""The ``hyperplane`` command line: click commands only (parse, call, print).
"""

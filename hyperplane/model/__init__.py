"""The declarative account (pure): the topology file read within bounds and parsed by one typed
parser into frozen records, its settings and timing, the names of kernel objects, and the
records of ENIs, environments and addresses.
"""

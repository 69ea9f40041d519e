"""What platform packages see of the core: the Platform they register, the context their factory
gets, the narrow bridge API.
"""

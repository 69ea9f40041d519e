"""State in Redis: the connection, thread records, de-duplication, locks, rate budgets, forms,
answers in flight, usage.
"""

"""The developer's room: the whole system on one machine (`thinkmesh up`, the local stack) and `make demo`.

Nothing in production imports it; it sits above every service and may use any of them.
"""

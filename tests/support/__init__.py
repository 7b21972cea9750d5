"""Helpers the tests share: each module one engine (baking, label selectors, NetworkPolicies, ...)."""

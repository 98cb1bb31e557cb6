"""Accounts: login pages and the user's own API token."""

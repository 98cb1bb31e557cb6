"""Accounts: login pages, the user's own API token, and the sign-in limits and audit of every login path."""

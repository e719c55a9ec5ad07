"""Arrears developer tooling: the local stack and the dev SMTP and SMS sinks."""

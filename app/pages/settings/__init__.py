"""The Settings page: server, worker name, token (kept in the keychain), model, limits, folders."""

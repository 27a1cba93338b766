"""The server's lifecycle and its door: build, warm up, serve, drain; workers; guard and token."""

"""pytest fixtures for the fake OpenAI-compatible server (see openai_server.py)."""

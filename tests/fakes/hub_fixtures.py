"""pytest fixtures for the fake Hugging Face Hub server (see hub_server.py)."""

"""Real local servers the tests start on 127.0.0.1: a fake OpenAI-compatible teacher, a fake Hub."""

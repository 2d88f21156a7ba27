"""Plugin tools: calculator, equation solver, search, text-to-image."""

"""Text engines shared by the stages: scripts and languages, tokens, exact and near-duplicate keys."""

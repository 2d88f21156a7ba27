"""Safety checks on (user turn, assistant turn) pairs: keyword/regex lexicon, PII, refusals, and
pluggable moderation/LLM-judge checkers in a cascade."""

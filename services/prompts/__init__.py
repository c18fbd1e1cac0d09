"""Zero-, one- and few-shot classification with a packaged LLM (SmolLM2-135M-Instruct)."""

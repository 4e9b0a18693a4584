"""A self-hostable LLM gateway that speaks the OpenAI API."""

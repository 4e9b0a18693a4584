-- Which API each request spoke: chat completions, Anthropic Messages or OpenAI Responses.
ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT 'chat';

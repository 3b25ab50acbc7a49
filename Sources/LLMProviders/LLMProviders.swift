// LLMProviders: calls to language models. HTTP adapters for the three wire
// styles (OpenAI chat completions, Anthropic messages, Gemini generateContent)
// over async-http-client, a deterministic offline `local` provider, and the
// retry policy (exponential backoff with jitter; 429, 5xx and timeouts retry,
// other 4xx and malformed answers do not). API keys come from configuration and
// are never logged.

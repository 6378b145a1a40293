"""Recorded agent-model exchanges shaped exactly like OpenAI's and Anthropic's HTTP responses, for replay tests.

The bodies follow the providers' documented wire formats (chat.completion
objects, Messages API objects, and their error envelopes), as the SDKs parse
them; only the text and the token counts are ours.
"""

import json

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


def openai_reply(text: str, prompt_tokens: int = 1800, completion_tokens: int = 400, model: str = "gpt-4.1-2025-04-14") -> dict:
    body = {
        "id": "chatcmpl-CRf1x9Qk2v7aZbTt3mYpE0sLwN4hd", "object": "chat.completion", "created": 1795400000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_b3f1157249"}
    return {"provider": "openai", "model": "gpt-4.1", "url": OPENAI_URL, "status": 200,
            "headers": {"content-type": "application/json", "x-request-id": "req_5d0c2b9e41f7"}, "response": body}


def openai_rate_limit() -> dict:
    body = {"error": {"message": "Rate limit reached for gpt-4.1 in organization org-sia on tokens per min (TPM): Limit 30000, "
                                 "Used 29870, Requested 2210. Please try again in 4.16s.",
                      "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}
    return {"provider": "openai", "model": "gpt-4.1", "url": OPENAI_URL, "status": 429,
            "headers": {"content-type": "application/json", "retry-after": "5", "x-request-id": "req_77a1"}, "response": body}


def anthropic_reply(text: str, input_tokens: int = 2100, output_tokens: int = 350, model: str = "claude-sonnet-4-6") -> dict:
    body = {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": output_tokens, "service_tier": "standard"}}
    return {"provider": "anthropic", "model": model, "url": ANTHROPIC_URL, "status": 200,
            "headers": {"content-type": "application/json", "request-id": "req_011CUa8pXb"}, "response": body}


def anthropic_overloaded() -> dict:
    body = {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization of 30,000 input tokens per minute.",
        },
    }
    return {
        "provider": "anthropic",
        "model": "claude-sonnet-4-6",
        "url": ANTHROPIC_URL,
        "status": 429,
        "headers": {"content-type": "application/json", "retry-after": "3", "request-id": "req_011CUa8q"},
        "response": body,
    }


def write(path, role_exchanges: list[tuple[str, dict]]) -> str:
    with open(path, "w") as f:
        for role, x in role_exchanges:
            f.write(json.dumps({"role": role, **x}) + "\n")
    return str(path)

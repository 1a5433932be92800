"""Tool calls through the official `openai` Python package (scripts/test-serve.sh).

BASE_URL names a `tern serve` of Qwen2.5-Coder-0.5B. The model is offered a tool; its reply
must come back as an OpenAI tool call, and the tool's answer, sent back as a `tool` message
with the whole conversation, must be prefilled from the conversation's cache.
"""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ.get("API_KEY", "none"))
model = client.models.list().data[0].id
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}]
messages = [{"role": "user", "content": "What is the weather in Paris right now?"}]

r = client.chat.completions.create(
    model=model, messages=messages, tools=tools, temperature=0, max_tokens=64
)
choice = r.choices[0]
print("tool call:", choice.message.tool_calls)
assert choice.finish_reason == "tool_calls", r
call = choice.message.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather", call
assert "Paris" in json.loads(call.function.arguments)["city"], call

messages.append({
    "role": "assistant",
    "content": choice.message.content,
    "tool_calls": [c.model_dump() for c in choice.message.tool_calls],
})
messages.append({
    "role": "tool",
    "tool_call_id": call.id,
    "content": json.dumps({"temperature_c": 18, "sky": "clear"}),
})
r = client.chat.completions.create(
    model=model, messages=messages, tools=tools, temperature=0, max_tokens=48
)
usage = r.usage
cached = usage.prompt_tokens_details.cached_tokens
print("after the tool:", r.choices[0].message, usage)
# Only the tool's answer (its `<tool_response>` turn) was prefilled; the rest came from the
# cache.
assert cached > 150 and 15 <= usage.prompt_tokens - cached < 60, usage
m = r.choices[0].message
assert m.content is not None or m.tool_calls, m
print("openai tools: passed")

"""The official `openai` Python package against `tern serve` (scripts/test-serve.sh).

BASE_URL names the server. Checks the model list, a non-streamed and a streamed chat (the
streamed text equals the non-streamed one at temperature 0), a completion, a continued
conversation served from the cache, and an error the client raises as its own type.
"""

import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ.get("API_KEY", "none"))

models = client.models.list()
ids = [m.id for m in models.data]
assert ids, ids
model = ids[0]
print("models:", ids)

messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
text = r.choices[0].message.content
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant"
assert r.choices[0].finish_reason in ("stop", "length"), r
assert text, r
assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, r.usage
print("chat:", repr(text), r.usage)

pieces = []
usage = None
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    temperature=0,
    max_tokens=24,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
streamed = "".join(pieces)
print("streamed:", repr(streamed), usage)
assert streamed == text, (streamed, text)
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage

c = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=12, temperature=0)
assert c.choices[0].text, c
assert c.usage.completion_tokens > 0, c.usage
print("completion:", repr(c.choices[0].text), c.usage)

# The conversation goes on: the whole history again, plus one message.
messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "And of Italy?"}]
r2 = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
cached = r2.usage.prompt_tokens_details.cached_tokens
print("second turn:", repr(r2.choices[0].message.content), r2.usage)
assert cached > 0, r2.usage

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    sys.exit("an unknown model was accepted")
except openai.NotFoundError as e:
    print("unknown model:", e.status_code)
try:
    client.chat.completions.create(model=model, messages=messages, temperature=5)
    sys.exit("temperature 5 was accepted")
except openai.BadRequestError as e:
    print("temperature 5:", e.status_code)
print("openai client: all checks passed")
